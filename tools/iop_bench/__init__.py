"""iop-bench: ioplexd on every backend, the I/O models and the peers, measured side
by side (tools/iop-bench is the command; README.md here says what each module does)."""
