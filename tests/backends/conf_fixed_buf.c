/* Registered buffers (iop_buf_register, iop_op_set_fixed_buf): ops naming one move
 * the same bytes as plain ops on every backend (natively: READ_FIXED, WRITE_FIXED and
 * zero-copy sends from the registered pages), and every backend refuses the same
 * mistakes at submit. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include "conformance.h"

#define BUF_SIZE 8192

typedef struct fixed_set {
    struct iovec iov[2];
    int native;                /* iop_buf_register said 1 */
} fixed_set_t;

static int lists_user_bufs(FILE *fdinfo, void *want)
{
    char line[256];
    while (fgets(line, sizeof line, fdinfo))
        if (strncmp(line, "UserBufs:", 9) == 0)
            return atoi(line + 9) == *(int *)want;
    return 0;
}

static void set_register(iop_loop_t *loop, fixed_set_t *fs)
{
    for (int i = 0; i < 2; i++) {
        fs->iov[i].iov_base = aligned_alloc(4096, BUF_SIZE);
        assert_non_null(fs->iov[i].iov_base);
        memset(fs->iov[i].iov_base, 0, BUF_SIZE);
        fs->iov[i].iov_len = BUF_SIZE;
    }
    int r = iop_buf_register(loop, fs->iov, 2);
    assert_true(r == 0 || r == 1);
    fs->native = r;
    /* The caps say what the call did: the kernel may refuse even where the backend
     * has them (a low memlock limit), and then the report says why. */
    assert_int_equal((iop_loop_caps(loop) & IOP_CAP_REGISTERED_BUFFERS) != 0, r);
    if (r == 0 && strstr(iop_loop_backend(loop), "uring"))
        assert_non_null(strstr(iop_loop_backend_report(loop), "registered buffers refused"));
    int two = 2;               /* and the ring has them */
    if (r == 1 && strstr(iop_loop_backend(loop), "uring"))
        assert_true(tu_fdinfo_each("anon_inode:[io_uring]", lists_user_bufs, &two));
}

static void set_free(iop_loop_t *loop, fixed_set_t *fs)
{
    assert_int_equal(iop_buf_unregister(loop), 0);
    assert_int_equal(iop_buf_unregister(loop), -ENOENT);
    for (int i = 0; i < 2; i++)
        free(fs->iov[i].iov_base);
}

/* A file written from one registered buffer (at an offset inside it) and read back
 * into the other, positioned and at the file position. */
void test_fixed_buf_file_rw(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fixed_set_t fs;
    set_register(loop, &fs);
    char *out = fs.iov[0].iov_base, *in = fs.iov[1].iov_base;
    tu_fill_pattern(out, BUF_SIZE, 11);
    int fd = tu_tmpfile("", 0);
    rec_t r = { 0 };

    iop_prep_write(&r.op, fd, out + 100, 5000, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 5000);

    iop_prep_read(&r.op, fd, in, BUF_SIZE, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 1);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 2, 2000));
    assert_int_equal(r.res, 5000);
    assert_memory_equal(in, out + 100, 5000);

    memset(in, 0, BUF_SIZE);
    iop_prep_read(&r.op, fd, in + 4000, 300, -1, rec_cb, &r);   /* file position: 0 */
    iop_op_set_fixed_buf(&r.op, 1);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 3, 2000));
    assert_int_equal(r.res, 300);
    assert_memory_equal(in + 4000, out + 100, 300);

    conf_close(loop, fd);
    set_free(loop, &fs);
    iop_loop_destroy(loop);
}

typedef struct zc_send {
    iop_op_t op;
    int calls, finals, sent;
} zc_send_t;

static void zc_cb(iop_op_t *op, int res)
{
    zc_send_t *z = op->data;
    if (z->calls++ == 0)
        z->sent = res;
    if (!iop_op_more(op))
        z->finals++;
}

/* Over loopback TCP: a zero-copy send from a registered buffer, and recvs into the
 * other one, until every byte the send reported has come. */
void test_fixed_buf_send_recv(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fixed_set_t fs;
    set_register(loop, &fs);
    char *out = fs.iov[0].iov_base, *in = fs.iov[1].iov_base;
    tu_fill_pattern(out, BUF_SIZE, 5);
    int s[2];
    tu_tcp_pair(s);

    zc_send_t z = { 0 };
    iop_prep_send(&z.op, s[0], out, BUF_SIZE, 0, zc_cb, &z);
    iop_op_set_zerocopy(&z.op);
    iop_op_set_fixed_buf(&z.op, 0);
    assert_int_equal(iop_submit(loop, &z.op), 0);
    assert_true(tu_run_until_count(loop, &z.finals, 1, 3000));
    assert_true(z.sent > 0 && z.sent <= BUF_SIZE);

    int got = 0;
    rec_t r = { 0 };
    while (got < z.sent) {
        iop_prep_recv(&r.op, s[1], in + got, (size_t)(BUF_SIZE - got), 0, rec_cb, &r);
        iop_op_set_fixed_buf(&r.op, 1);
        int calls = r.calls;
        assert_int_equal(iop_submit(loop, &r.op), 0);
        assert_true(tu_run_until_count(loop, &r.calls, calls + 1, 3000));
        assert_true(r.res > 0);
        got += r.res;
    }
    assert_int_equal(got, z.sent);
    assert_memory_equal(in, out, (size_t)got);

    /* A plain send from the set goes too. */
    iop_prep_send(&r.op, s[0], out + 10, 20, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    int calls = r.calls;
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, calls + 1, 3000));
    assert_int_equal(r.res, 20);
    char tail[20];
    size_t have = 0;
    for (int tries = 0; have < sizeof tail && tries < 2000; tries++) {
        ssize_t n = recv(s[1], tail + have, sizeof tail - have, MSG_DONTWAIT);
        if (n > 0)
            have += (size_t)n;
        else
            tu_sleep_ms(1);
    }
    assert_int_equal(have, sizeof tail);
    assert_memory_equal(tail, out + 10, sizeof tail);

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    set_free(loop, &fs);
    iop_loop_destroy(loop);
}

/* A forked child cannot register a set on its parent's loop, and its unregister
 * frees only its own copy: it once unregistered the parent's buffers from the ring
 * they share (a ring not yet run, or one with SQPOLL), and the parent's next fixed
 * read failed with -EFAULT. */
void test_fixed_buf_fork_child(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    fixed_set_t fs;
    set_register(loop, &fs);       /* before the loop first runs */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int code = 0;
        struct iovec other = { fs.iov[0].iov_base, 64 };
        if (iop_buf_register(loop, &other, 1) != -ECHILD)
            code |= 1;
        if (iop_buf_unregister(loop) != 0)
            code |= 2;
        iop_buf_release(loop, 0);  /* nothing lent: ignored here as anywhere */
        _exit(code);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char *in = fs.iov[1].iov_base;
    int fd = tu_tmpfile("registered", 10);
    rec_t r = { 0 };
    iop_prep_read(&r.op, fd, in, BUF_SIZE, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 1);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 2000));
    assert_int_equal(r.res, 10);
    assert_memory_equal(in, "registered", 10);
    close(fd);
    set_free(loop, &fs);
    iop_loop_destroy(loop);
}

/* What every backend refuses, at submit, with no callback: a buffer outside the one
 * named, an index past the set, an op kind that has no single buffer, any of it with
 * no set registered; and a second set, an empty one, a buffer of no bytes. */
void test_fixed_buf_refused(void **state)
{
    (void)state;
    iop_loop_t *loop = tu_loop_new();
    int s[2];
    tu_tcp_pair(s);
    rec_t r = { 0 };
    char stack_buf[64];

    iop_prep_recv(&r.op, s[1], stack_buf, sizeof stack_buf, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* no set yet */

    fixed_set_t fs;
    set_register(loop, &fs);
    char *b0 = fs.iov[0].iov_base;
    assert_int_equal(iop_buf_register(loop, fs.iov, 2), -EBUSY);

    iop_prep_recv(&r.op, s[1], stack_buf, sizeof stack_buf, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* not in buffer 0 */
    assert_non_null(strstr(iop_last_error(), "not inside registered buffer 0"));

    iop_prep_recv(&r.op, s[1], b0 + BUF_SIZE - 10, 11, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* one byte past its end */

    iop_prep_recv(&r.op, s[1], b0 - 1, 10, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* starts before it */

    iop_prep_recv(&r.op, s[1], b0, 10, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 2);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* the set has 2 */
    assert_non_null(strstr(iop_last_error(), "buffer 2 of 2"));

    struct msghdr msg = { 0 };
    iop_prep_recvmsg(&r.op, s[1], &msg, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* no single buffer */

    tu_run_nowait(loop, 2);
    assert_int_equal(r.calls, 0);

    /* The whole of a buffer is fine, up to its last byte. */
    assert_int_equal(send(s[0], "x", 1, 0), 1);
    iop_prep_recv(&r.op, s[1], b0 + BUF_SIZE - 1, 1, 0, rec_cb, &r);
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), 0);
    assert_true(tu_run_until_count(loop, &r.calls, 1, 3000));
    assert_int_equal(r.res, 1);
    assert_int_equal(b0[BUF_SIZE - 1], 'x');

    set_free(loop, &fs);
    iop_prep_recv(&r.op, s[1], b0, 10, 0, rec_cb, &r);    /* freed: only the check runs */
    iop_op_set_fixed_buf(&r.op, 0);
    assert_int_equal(iop_submit(loop, &r.op), -EINVAL);   /* unregistered */

    struct iovec bad[2] = { { stack_buf, sizeof stack_buf }, { stack_buf, 0 } };
    assert_int_equal(iop_buf_register(loop, bad, 0), -EINVAL);
    assert_int_equal(iop_buf_register(loop, bad, 2), -EINVAL);
    assert_int_equal(iop_buf_unregister(loop), -ENOENT);   /* nothing was kept */

    conf_close(loop, s[0]);
    conf_close(loop, s[1]);
    iop_loop_destroy(loop);
}
