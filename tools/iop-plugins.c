/* iop-plugins: lists the backend modules on the search path, whether each loads and
 * passes its probe here, and which one `auto` would take; then the service plugins
 * and their options.
 *
 *   iop-plugins [--plugin-path DIRS] [--json] [--help]
 *
 * Exit status: 0 when at least one backend is usable, 1 when none is, 2 on a usage
 * error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "ioplex.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: iop-plugins [--plugin-path DIRS] [--json] [--help]\n"
            "Lists the backend modules found on the search path (DIRS, then\n"
            "$IOPLEX_PLUGIN_PATH, then the build tree, or for an installed copy its own\n"
            "module dir, then the install dir): file, model, capabilities, and whether\n"
            "each loads and passes its probe here; then the service plugins (for\n"
            "ioplexd --service) with their options.\n"
            "  --plugin-path DIRS  ':'-separated dirs searched first\n"
            "  --json              one JSON object instead of text\n"
            "exit: 0 some backend is usable, 1 none is, 2 usage error\n");
}

static int usable(const iop_backend_info_t *b) { return b->desc && b->probe_err == 0; }

static const char *model_name(const iop_backend_info_t *b)
{
    if (!b->desc)
        return NULL;
    return b->desc->model == IOP_MODEL_COMPLETION ? "completion" : "readiness";
}

/* Is name an entry of the ','-separated list (spaces around entries allowed)? */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        p += strspn(p, " \t,");
        size_t len = strcspn(p, ",");
        size_t trimmed = len;
        while (trimmed && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        if (trimmed == n && strncmp(p, name, n) == 0)
            return 1;
        p += len;
    }
    return 0;
}

/* What auto would take: the first of IOP_AUTO_ORDER that is listed, usable and not in
 * $IOPLEX_BACKEND_AVOID. (Creating an instance can still fail; this does not try.) */
static const iop_backend_info_t *auto_pick(const iop_backend_info_t *list, size_t n)
{
    const char *avoid = getenv("IOPLEX_BACKEND_AVOID");
    char order[] = IOP_AUTO_ORDER;
    char *save = NULL;
    for (char *name = strtok_r(order, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        if (in_list(avoid, name))
            continue;
        for (size_t i = 0; i < n; i++)
            if (strcmp(list[i].name, name) == 0 && usable(&list[i]))
                return &list[i];
    }
    return NULL;
}

/* Calls fn for each file of the same module name further down the search path
 * than the one in use (path): those the first one hides. */
static void each_shadowed(const char *search, const char *kind, const char *name, const char *path,
                          void (*fn)(const char *file, int first))
{
    struct stat used, st;
    if (stat(path, &used) != 0)
        return;
    int count = 0;
    for (const char *p = search; *p;) {
        size_t len = strcspn(p, ":");
        char file[4096];
        if (len && (size_t)snprintf(file, sizeof file, "%.*s/iop_%s_%s.so", (int)len, p, kind, name) < sizeof file &&
            stat(file, &st) == 0 && !(st.st_dev == used.st_dev && st.st_ino == used.st_ino))
            fn(file, count++ == 0);
        p += len;
        p += *p == ':';
    }
}

static void print_shadow_text(const char *file, int first)
{
    (void)first;
    printf("  %-8s %s (not used: the file above comes first)\n", "hides", file);
}

static void print_shadow_json(const char *file, int first);

/* ---- text ------------------------------------------------------------------- */

static void print_services_text(const iop_service_info_t *svc, size_t ns, const char *search)
{
    printf("services:%s\n", ns ? "" : " none found");
    for (size_t i = 0; i < ns; i++) {
        const iop_service_info_t *s = &svc[i];
        if (s->desc) {
            printf("%-10s service    %s\n", s->name, s->desc->summary ? s->desc->summary : "");
            if (s->desc->options_help)
                printf("%s", s->desc->options_help);
        } else {
            printf("%-10s refused (%s): %s\n", s->name, iop_strerror(s->load_err), s->why);
        }
        printf("  %-8s %s\n", "file", s->path);
        each_shadowed(search, "service", s->name, s->path, print_shadow_text);
    }
}

static void print_text(const iop_backend_info_t *list, size_t n, const char *search,
                       const iop_backend_info_t *pick)
{
    char caps[512];
    if (n == 0)
        printf("no backend modules found\n");
    for (size_t i = 0; i < n; i++) {
        const iop_backend_info_t *b = &list[i];
        if (b->desc) {
            printf("%-10s %-10s probe: %s\n", b->name, model_name(b), b->probe_err ? b->why : "ok");
            printf("  %-8s %s\n", "summary", b->desc->summary ? b->desc->summary : "");
            iop_caps_str(b->desc->caps, caps, sizeof caps);
            printf("  %-8s %s\n", "caps", caps[0] ? caps : "(none)");
        } else {
            printf("%-10s refused (%s): %s\n", b->name, iop_strerror(b->load_err), b->why);
        }
        printf("  %-8s %s\n", "file", b->path);
        each_shadowed(search, "backend", b->name, b->path, print_shadow_text);
    }
    printf("search path: %s\n", search);
    const char *avoid = getenv("IOPLEX_BACKEND_AVOID");
    printf("auto would take: %s", pick ? pick->name : "nothing (no usable backend)");
    if (avoid && *avoid)
        printf(" (IOPLEX_BACKEND_AVOID=%s)", avoid);
    printf("\n");
    const char *forced = getenv("IOPLEX_BACKEND");
    if (forced && *forced && strcmp(forced, "auto") != 0)
        printf("but IOPLEX_BACKEND=%s is set: loops without an explicit backend use that\n", forced);
}

/* ---- JSON ------------------------------------------------------------------- */

static void json_string(const char *s)
{
    if (!s) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (*p < 0x20)
                printf("\\u%04x", *p);
            else
                putchar(*p);   /* UTF-8 bytes pass through unchanged */
        }
    }
    putchar('"');
}

/* Capabilities as an array of names. */
static void json_caps(uint32_t bits)
{
    char caps[512];
    iop_caps_str(bits, caps, sizeof caps);
    putchar('[');
    char *save = NULL;
    int first = 1;
    for (char *c = strtok_r(caps, " ", &save); c; c = strtok_r(NULL, " ", &save), first = 0) {
        if (!first)
            putchar(',');
        json_string(c);
    }
    putchar(']');
}

static void print_shadow_json(const char *file, int first)
{
    printf("%s", first ? "" : ",");
    json_string(file);
}

static void print_json(const iop_backend_info_t *list, size_t n, const char *search,
                       const iop_backend_info_t *pick)
{
    printf("{\"search_path\":");
    json_string(search);
    printf(",\"backends\":[");
    for (size_t i = 0; i < n; i++) {
        const iop_backend_info_t *b = &list[i];
        printf("%s\n{\"name\":", i ? "," : "");
        json_string(b->name);
        printf(",\"path\":");
        json_string(b->path);
        printf(",\"loaded\":%s,\"usable\":%s", b->desc ? "true" : "false", usable(b) ? "true" : "false");
        if (b->desc) {
            printf(",\"model\":");
            json_string(model_name(b));
            printf(",\"summary\":");
            json_string(b->desc->summary);
            printf(",\"caps\":");
            json_caps(b->desc->caps);
            printf(",\"probe\":");
            json_string(b->probe_err ? b->why : "ok");
        } else {
            printf(",\"error\":");
            json_string(b->why);
        }
        printf(",\"errno\":%d,\"hides\":[", -(b->load_err ? b->load_err : b->probe_err));
        each_shadowed(search, "backend", b->name, b->path, print_shadow_json);
        printf("]}");
    }
    printf("%s],\"auto\":", n ? "\n" : "");
    json_string(pick ? pick->name : NULL);
}

static void print_services_json(const iop_service_info_t *svc, size_t ns, const char *search)
{
    printf(",\"services\":[");
    for (size_t i = 0; i < ns; i++) {
        const iop_service_info_t *s = &svc[i];
        printf("%s\n{\"name\":", i ? "," : "");
        json_string(s->name);
        printf(",\"path\":");
        json_string(s->path);
        printf(",\"loaded\":%s", s->desc ? "true" : "false");
        if (s->desc) {
            printf(",\"summary\":");
            json_string(s->desc->summary);
            printf(",\"options\":");
            json_string(s->desc->options_help);
        } else {
            printf(",\"error\":");
            json_string(s->why);
        }
        printf(",\"hides\":[");
        each_shadowed(search, "service", s->name, s->path, print_shadow_json);
        printf("]}");
    }
    printf("%s]}\n", ns ? "\n" : "");
}

int main(int argc, char **argv)
{
    const char *plugin_path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--plugin-path") == 0) {
            if (i + 1 == argc) {
                fprintf(stderr, "iop-plugins: --plugin-path needs a value (try --help)\n");
                return 2;
            }
            plugin_path = argv[++i];
        } else if (strncmp(argv[i], "--plugin-path=", 14) == 0) {
            plugin_path = argv[i] + 14;
        } else {
            fprintf(stderr, "iop-plugins: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    iop_backend_info_t *list = NULL;
    size_t n = 0;
    int r = iop_backend_list(plugin_path, &list, &n);
    if (r < 0) {
        fprintf(stderr, "iop-plugins: %s\n", iop_last_error());
        return 1;
    }
    char search[8192], svc_search[8192];   /* backends and services live apart */
    iop_plugin_search_path(plugin_path, search, sizeof search);
    iop_service_search_path(plugin_path, svc_search, sizeof svc_search);
    const iop_backend_info_t *pick = auto_pick(list, n);
    iop_service_info_t *svc = NULL;
    size_t ns = 0;
    if (iop_service_list(plugin_path, &svc, &ns) < 0)
        fprintf(stderr, "iop-plugins: cannot list services: %s\n", iop_last_error());
    if (json) {
        print_json(list, n, search, pick);
        print_services_json(svc, ns, svc_search);
    } else {
        print_text(list, n, search, pick);
        print_services_text(svc, ns, svc_search);
    }
    iop_service_list_free(svc);

    int any = 0;
    for (size_t i = 0; i < n; i++)
        any |= usable(&list[i]);
    iop_backend_list_free(list);
    if (fflush(stdout) != 0 || ferror(stdout)) {   /* a listing that did not get out */
        fprintf(stderr, "iop-plugins: writing the listing: %s\n", strerror(errno));
        return 1;
    }
    return any ? 0 : 1;
}
