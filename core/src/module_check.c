/* What the loader checks of a module file before the dynamic linker maps it: a
 * regular file (a FIFO would block the open, a directory is no module), an ELF
 * shared object for this machine, and every segment inside the file. A file cut
 * short (an interrupted copy or install) otherwise maps past its end and the
 * first touch of the missing pages kills the process with SIGBUS, inside dlopen.
 *
 * It also looks up the descriptor among the file's dynamic symbols and reads its
 * first field, the ABI version: a module without a descriptor, or built for another
 * ABI, is refused before any of its code runs (dlopen runs its constructors, and
 * those of the libraries it pulls in, built against who knows what). A file without
 * section headers cannot be read this way; the loader then checks after loading. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ioplex/alloc.h"
#include "loader.h"

#if defined(__x86_64__)
#define OUR_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define OUR_MACHINE EM_AARCH64
#endif

#define MAX_PHDRS 64

#define MAX_SECTIONS 4096
#define MAX_DYNSTR (1u << 20)
#define SYM_CHUNK 64

static int refuse(int err, char *why, size_t whylen, const char *what)
{
    snprintf(why, whylen, "not a loadable module: %s", what);
    return err;
}

static int in_file(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

/* The file offset of the 4 bytes at vaddr in a loaded segment, or -1 (also for
 * zero-filled memory past a segment's file part: read as 0 by the caller). */
static int64_t file_offset(const ElfW(Phdr) *ph, unsigned n, uint64_t vaddr)
{
    for (unsigned i = 0; i < n; i++)
        if (ph[i].p_type == PT_LOAD && vaddr >= ph[i].p_vaddr && ph[i].p_filesz >= 4 &&
            vaddr - ph[i].p_vaddr <= ph[i].p_filesz - 4)
            return (int64_t)(ph[i].p_offset + (vaddr - ph[i].p_vaddr));
    return -1;
}

/* Finds symbol, defined, among the dynamic symbols (the .dynsym section and its
 * string table): 1 with *first = the first 4 bytes of its value and *sym_size = its
 * size, 0 if the file does not define it, -1 when it cannot tell (no section
 * headers, say, or they make no sense: then the dynamic linker has the last word). */
static int find_symbol(int fd, uint64_t size, const ElfW(Ehdr) *eh, const ElfW(Phdr) *ph,
                       const char *symbol, uint32_t *first, uint64_t *sym_size)
{
    if (eh->e_shoff == 0 || eh->e_shnum == 0 || eh->e_shnum > MAX_SECTIONS ||
        eh->e_shentsize != sizeof(ElfW(Shdr)) ||
        !in_file(eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(ElfW(Shdr)), size))
        return -1;
    ElfW(Shdr) sym_sh, str_sh;
    unsigned i;
    for (i = 0; i < eh->e_shnum; i++) {
        if (pread(fd, &sym_sh, sizeof sym_sh, (off_t)(eh->e_shoff + i * sizeof sym_sh)) != (ssize_t)sizeof sym_sh)
            return -1;
        if (sym_sh.sh_type == SHT_DYNSYM)
            break;
    }
    if (i == eh->e_shnum || sym_sh.sh_link == 0 || sym_sh.sh_link >= eh->e_shnum ||
        sym_sh.sh_entsize != sizeof(ElfW(Sym)) || !in_file(sym_sh.sh_offset, sym_sh.sh_size, size) ||
        pread(fd, &str_sh, sizeof str_sh, (off_t)(eh->e_shoff + sym_sh.sh_link * sizeof str_sh)) !=
            (ssize_t)sizeof str_sh ||
        str_sh.sh_type != SHT_STRTAB || str_sh.sh_size == 0 || str_sh.sh_size > MAX_DYNSTR ||
        !in_file(str_sh.sh_offset, str_sh.sh_size, size))
        return -1;
    char *str = iop_malloc(str_sh.sh_size);
    if (!str)
        return -1;
    int found = -1;
    if (pread(fd, str, str_sh.sh_size, (off_t)str_sh.sh_offset) == (ssize_t)str_sh.sh_size) {
        found = 0;
        size_t want = strlen(symbol) + 1, nsym = sym_sh.sh_size / sizeof(ElfW(Sym));
        ElfW(Sym) chunk[SYM_CHUNK];
        for (size_t k = 0; k < nsym && found == 0; k += SYM_CHUNK) {
            size_t m = nsym - k < SYM_CHUNK ? nsym - k : SYM_CHUNK;
            if (pread(fd, chunk, m * sizeof *chunk, (off_t)(sym_sh.sh_offset + k * sizeof *chunk)) !=
                (ssize_t)(m * sizeof *chunk)) {
                found = -1;
                break;
            }
            for (size_t j = 0; j < m; j++) {
                const ElfW(Sym) *y = &chunk[j];
                if (y->st_shndx == SHN_UNDEF || ELF64_ST_BIND(y->st_info) == STB_LOCAL ||
                    y->st_name >= str_sh.sh_size || str_sh.sh_size - y->st_name < want ||
                    memcmp(str + y->st_name, symbol, want) != 0)
                    continue;
                int64_t off = file_offset(ph, eh->e_phnum, y->st_value);
                *first = 0;
                *sym_size = y->st_size;
                found = off < 0 || pread(fd, first, sizeof *first, (off_t)off) == (ssize_t)sizeof *first ? 1 : -1;
                break;
            }
        }
    }
    iop_free(str);
    return found;
}

int iop__module_check(const char *path, const char *symbol, uint32_t *first, uint64_t *sym_size,
                      char *why, size_t whylen)
{
    *sym_size = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        struct stat st;
        if (err == ENOENT && lstat(path, &st) == 0)
            return refuse(-ENOENT, why, whylen, "a symlink to nothing");
        snprintf(why, whylen, "cannot open it: %s", strerror(err));
        return -err;
    }
    int r = 0;
    struct stat st;
    ElfW(Ehdr) eh;
    ElfW(Phdr) ph[MAX_PHDRS];
    if (fstat(fd, &st) < 0) {
        r = -errno;
        snprintf(why, whylen, "cannot stat it: %s", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        r = refuse(-EINVAL, why, whylen, S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
    } else if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh) {
        r = refuse(-ENOEXEC, why, whylen, "too short for an ELF header (a truncated file?)");
    } else if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) {
        r = refuse(-ENOEXEC, why, whylen, "not an ELF file");
    } else if (eh.e_ident[EI_CLASS] != (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32) ||
#ifdef OUR_MACHINE
               eh.e_machine != OUR_MACHINE ||
#endif
               0) {
        r = refuse(-ENOEXEC, why, whylen, "built for another kind of machine");
    } else if (eh.e_type != ET_DYN) {
        r = refuse(-ENOEXEC, why, whylen, "not a shared object");
    } else if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == 0 || eh.e_phnum > MAX_PHDRS ||
               pread(fd, ph, eh.e_phnum * sizeof *ph, (off_t)eh.e_phoff) != (ssize_t)(eh.e_phnum * sizeof *ph)) {
        r = refuse(-ENOEXEC, why, whylen, "its program headers are missing or malformed (a truncated file?)");
    } else {
        for (unsigned i = 0; i < eh.e_phnum && r == 0; i++) {
            if (ph[i].p_type != PT_LOAD && ph[i].p_type != PT_DYNAMIC)
                continue;
            if (ph[i].p_offset > (uint64_t)st.st_size || ph[i].p_filesz > (uint64_t)st.st_size - ph[i].p_offset) {
                snprintf(why, whylen, "not a loadable module: truncated (%lld bytes; its segments need %llu)",
                         (long long)st.st_size, (unsigned long long)(ph[i].p_offset + ph[i].p_filesz));
                r = -ENOEXEC;
            }
        }
        if (r == 0 && symbol) {
            r = find_symbol(fd, (uint64_t)st.st_size, &eh, ph, symbol, first, sym_size);
            if (r == 0) {
                snprintf(why, whylen, "no descriptor symbol '%s'", symbol);
                r = -ENOEXEC;
            } else if (r < 0) {
                r = 0;     /* cannot tell: the loader looks after loading */
            }
        }
    }
    close(fd);
    return r;
}
