/* Sends uninitialised bytes through the uring backend. Run under memcheck, which
 * does not see the kernel read through the ring: the backend must say what it
 * hands the kernel, so that memcheck reports these bytes as it would for a plain
 * send (ctest expects its report). 77 = skipped (no io_uring here). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ioplex.h>

enum { LEN = 16 };

static void sent(iop_op_t *op, int res)
{
    *(int *)op->data = res == LEN ? 1 : -1;
}

int main(void)
{
    iop_loop_t *loop;
    iop_loop_opts_t o = { .size = sizeof o, .backend = "uring" };
    if (iop_loop_create(&loop, &o) < 0) {
        printf("uring unavailable: skipped (%s)\n", iop_last_error());
        return 77;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        perror("socketpair");
        return 1;
    }
    char *junk = malloc(LEN);    /* never written */
    int done = 0;
    iop_op_t op;
    iop_prep_send(&op, sv[0], junk, LEN, 0, sent, &done);
    if (!junk || iop_submit(loop, &op) < 0) {
        fprintf(stderr, "submit: %s\n", iop_last_error());
        return 1;
    }
    for (int i = 0; i < 1000 && !done; i++)
        if (iop_loop_run(loop, IOP_RUN_ONCE) < 0)
            break;
    char back[LEN];
    int ok = done == 1 && recv(sv[1], back, sizeof back, MSG_DONTWAIT) == LEN;
    free(junk);
    iop_fd_forget(loop, sv[0]);
    iop_loop_destroy(loop);
    close(sv[0]);
    close(sv[1]);
    printf("send of %d uninitialised bytes: %s\n", LEN, ok ? "done" : "FAILED");
    return ok ? 0 : 1;
}
