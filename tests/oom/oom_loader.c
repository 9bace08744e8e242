/* The loader under the sweep: listing modules, opening a service. */
#include "oom_sweep.h"

static void loader_scenario(void)
{
    iop_backend_info_t *bl = NULL;
    iop_service_info_t *sl = NULL;
    iop_service_t *svc = NULL;
    size_t nb = 0, ns = 0;
    if (note(iop_backend_list(NULL, &bl, &nb), "iop_backend_list") == 0) {
        assert_true(nb >= 1);
        iop_backend_list_free(bl);
    } else {
        assert_null(bl);
    }
    if (note(iop_service_list(NULL, &sl, &ns), "iop_service_list") == 0) {
        assert_true(ns >= 3);
        iop_service_list_free(sl);
    } else {
        assert_null(sl);
    }
    if (note(iop_service_open(&svc, "chat", NULL), "iop_service_open") == 0) {
        assert_string_equal(iop_service_desc(svc)->name, "chat");
        iop_service_close(svc);
    }
    /* What failed left nothing behind: the same calls work with memory back. */
    if (oc.err) {
        inject(-1);
        assert_int_equal(iop_backend_list(NULL, &bl, &nb), 0);
        iop_backend_list_free(bl);
        assert_int_equal(iop_service_open(&svc, "chat", NULL), 0);
        iop_service_close(svc);
    }
}

void test_loader(void **state)
{
    (void)state;
    sweep("loader", loader_scenario);
}
