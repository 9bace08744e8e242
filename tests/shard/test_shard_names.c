/* A listen address given by a host name that resolves to both loopbacks (::1 and
 * 127.0.0.1, from an /etc/hosts of our own bind-mounted in a private mount
 * namespace), on one backend (argv[1]) and listener mode (argv[2]): with
 * IOP_SHARD_ALL_ADDRESSES every worker serves both addresses on one port, before
 * and after a SIGHUP restart, and the stats count every connection; without it only
 * the first address listens; a second address that cannot be bound fails the run
 * before any fork, naming that address, with nothing left listening. Skipped (77)
 * where a mount namespace cannot be made or ::1 is unusable. */
#include "test_shard_harness.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#define NAME "iop-dual-stack-name"
#define SKIP 77

static uint32_t mode;
static int order[2];               /* the families NAME resolves to, in order */

/* /etc/hosts for this process and its children only: NAME is ::1 and 127.0.0.1.
 * 0, or a reason to skip. */
static const char *private_hosts(void)
{
    char path[] = "/tmp/iop-hosts-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return "cannot make a temporary file";
    static const char hosts[] = "::1 " NAME "\n127.0.0.1 " NAME "\n";
    int wrote = write(fd, hosts, sizeof hosts - 1) == (ssize_t)(sizeof hosts - 1);
    close(fd);
    const char *why = NULL;
    if (!wrote)
        why = "cannot write the hosts file";
    else if (unshare(CLONE_NEWNS) < 0)
        why = "cannot make a mount namespace (unshare)";
    else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        why = "cannot make the mounts private";
    else if (mount(path, "/etc/hosts", NULL, MS_BIND, NULL) < 0)
        why = "cannot bind-mount /etc/hosts";
    unlink(path);
    return why;
}

/* NAME as ioplex resolves a listen address: both families, in the resolver's order. */
static const char *check_resolution(void)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res;
    if (getaddrinfo(NAME, "0", &hints, &res) != 0)
        return NAME " does not resolve";
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < 2; ai = ai->ai_next)
        if (n == 0 || ai->ai_family != order[0])
            order[n++] = ai->ai_family;
    freeaddrinfo(res);
    return n == 2 ? NULL : NAME " resolves to one family only";
}

static const char *family_name(int family)
{
    return family == AF_INET6 ? "::1" : "127.0.0.1";
}

/* n requests on each loopback; how many of them a pid outside old[2] answered. */
static int serve_both(int n, const pid_t *old)
{
    int fresh = 0;
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < n; i++) {
            pid_t p = 0;
            int r = sh_request_family(0, order[f], "both", NULL, &p);
            if (r < 0) {
                sh_dump_log();
                fail_msg("request %d on %s: %s", i, family_name(order[f]), iop_strerror(r));
            }
            fresh += !old || (p != old[0] && p != old[1]);
        }
    return fresh;
}

static uint64_t accepted_total(void)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < 2; i++) {
        iop_shard_worker_stats_t ws;
        assert_int_equal(iop_shard_stats_read(sh_stats, i, &ws), 0);
        n += ws.accepted;
    }
    return n;
}

static void test_every_address_across_sighup(void **state)
{
    (void)state;
    sh_config_t c = { .mode = mode, .flags = IOP_SHARD_ALL_ADDRESSES, .listen = { NAME ":0" } };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    serve_both(8, NULL);
    assert_int_equal(accepted_total(), 16);

    pid_t old[2] = { sh_worker_pid(0), sh_worker_pid(1) };
    assert_int_equal(kill(sh_sup, SIGHUP), 0);
    if (!sh_wait_ready(old, 2, 10000)) {
        sh_dump_log();
        fail_msg("the workers were not replaced after SIGHUP");
    }
    /* The old workers may take a last connection while they drain; the new ones
     * serve both addresses on the sockets they inherited. */
    int fresh = 0;
    for (int round = 0; round < 20 && fresh < 8; round++)
        fresh += serve_both(4, old);
    assert_true(fresh >= 8);
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
    assert_null(strstr(sh->log, "WARN"));
}

static void test_first_address_only_without_the_flag(void **state)
{
    (void)state;
    sh_config_t c = { .mode = mode, .listen = { NAME ":0" } };
    sh_start(&c);
    assert_true(sh_wait_ready(NULL, 0, 10000));
    assert_int_equal(sh_request_family(0, order[0], "first", NULL, NULL), 0);
    assert_int_equal(sh_request_family(0, order[1], "second", NULL, NULL), -ECONNREFUSED);
    assert_int_equal(sh_stop(SIGTERM, 10000), 0);
}

/* The loopback address of family at port (network order); its length. */
static socklen_t loopback(int family, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    ss->ss_family = (sa_family_t)family;
    if (family == AF_INET6) {
        ((struct sockaddr_in6 *)ss)->sin6_addr = in6addr_loopback;
        ((struct sockaddr_in6 *)ss)->sin6_port = port;
        return sizeof(struct sockaddr_in6);
    }
    ((struct sockaddr_in *)ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ((struct sockaddr_in *)ss)->sin_port = port;
    return sizeof(struct sockaddr_in);
}

/* A listener of our own on the loopback of family; its port (network order). */
static int listen_loopback(int family, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, 0, &ss);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    *port = family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                               : ((struct sockaddr_in *)&ss)->sin_port;
    return fd;
}

/* 0 if something listens on the loopback of family at port, else -errno. */
static int try_connect(int family, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len = loopback(family, port, &ss);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int r = connect(fd, (struct sockaddr *)&ss, len) == 0 ? 0 : -errno;
    close(fd);
    return r;
}

static void test_second_address_busy_fails_the_run(void **state)
{
    (void)state;
    uint16_t port;
    int busy = listen_loopback(order[1], &port);
    char spec[64], where[64];
    snprintf(spec, sizeof spec, NAME ":%u", (unsigned)ntohs(port));
    snprintf(where, sizeof where, order[1] == AF_INET6 ? "([::1]:%u)" : "(127.0.0.1:%u)",
             (unsigned)ntohs(port));
    sh_config_t c = { .mode = mode, .flags = IOP_SHARD_ALL_ADDRESSES, .listen = { spec } };
    int r = sh_start_failing(&c, 5000);   /* fails binding, before any fork */
    fprintf(stderr, "# %s\n", sh->error);
    assert_int_equal(r, -EADDRINUSE);
    assert_non_null(strstr(sh->error, spec));
    assert_non_null(strstr(sh->error, where));
    /* The first address was given up too: nothing is half served. */
    assert_int_equal(try_connect(order[0], port), -ECONNREFUSED);
    close(busy);
}

int main(int argc, char **argv)
{
    sh_init(argc, argv);
    mode = argc > 2 && strcmp(argv[2], "shared") == 0 ? IOP_SHARD_SHARED : IOP_SHARD_REUSEPORT;
    const char *why = sh_have_ipv6() ? private_hosts() : "no IPv6 loopback";
    if (!why)
        why = check_resolution();
    if (why) {
        printf("shard.names: skipped: %s\n", why);
        return SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_address_across_sighup, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_first_address_only_without_the_flag, sh_setup, sh_teardown),
        cmocka_unit_test_setup_teardown(test_second_address_busy_fails_the_run, sh_setup, sh_teardown),
    };
    char name[80];
    snprintf(name, sizeof name, "shard.names.%s.%s", sh_backend ? sh_backend : "default",
             mode == IOP_SHARD_SHARED ? "shared" : "reuseport");
    return cmocka_run_group_tests_name(name, tests, NULL, NULL);
}
