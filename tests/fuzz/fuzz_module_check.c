/* libFuzzer harness for what the loader checks of a plugin file before dlopen
 * (core/src/module_check.c): a file in the plugin directory may be cut short (an
 * interrupted copy), half written, or not a module at all. The input is the file.
 * Properties:
 *  - a file accepted is a 64-bit shared object for this machine whose loadable and
 *    dynamic segments all lie inside the file (read here from the bytes: every
 *    prefix of a module, as replay_main gives them, is a file cut short);
 *  - a file refused says why; the answer does not change when asked again;
 *  - the descriptor's first field, when read (1), comes from the file.
 * Built with clang -fsanitize=fuzzer (run-fuzz.sh) and by gcc with replay_main.c. */
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "ioplex/service.h"
#include "loader.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

void *iop_malloc(size_t n) { return malloc(n); }
void iop_free(void *p) { free(p); }

/* Every PT_LOAD and PT_DYNAMIC segment inside the file, read from the bytes. */
static int segments_inside(const uint8_t *data, size_t size)
{
    ElfW(Ehdr) eh;
    if (size < sizeof eh)
        return 0;
    memcpy(&eh, data, sizeof eh);
    if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phoff > size ||
        (uint64_t)eh.e_phnum * sizeof(ElfW(Phdr)) > size - eh.e_phoff)
        return 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        ElfW(Phdr) ph;
        memcpy(&ph, data + eh.e_phoff + i * sizeof ph, sizeof ph);
        if ((ph.p_type == PT_LOAD || ph.p_type == PT_DYNAMIC) &&
            (ph.p_offset > size || ph.p_filesz > size - ph.p_offset))
            return 0;
    }
    return 1;
}

/* Does the file hold these 4 bytes somewhere? */
static int holds(const uint8_t *data, size_t size, uint32_t v)
{
    for (size_t i = 0; i + 4 <= size; i++)
        if (memcmp(data + i, &v, 4) == 0)
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("module", MFD_CLOEXEC);
        CHECK(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);

    uint32_t first = 0xdeadbeef, first2 = 0xdeadbeef;
    uint64_t sym_size = 1, sym_size2 = 1;
    char why[256] = "", why2[256] = "";
    int r = iop__module_check(path, IOP_SERVICE_SYMBOL, &first, &sym_size, why, sizeof why);
    if (r >= 0) {
        CHECK(r <= 1);
        ElfW(Ehdr) eh;
        CHECK(size >= sizeof eh);
        memcpy(&eh, data, sizeof eh);
        CHECK(memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_type == ET_DYN);
        CHECK(eh.e_ident[EI_CLASS] == (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32));
        CHECK(segments_inside(data, size));
        /* 1: read from the file (or 0: past a segment's file part); 0: not read. */
        if (r == 1)
            CHECK(first == 0 || holds(data, size, first));
        else
            CHECK(first == 0xdeadbeef || first == 0);
    } else {
        CHECK(r < 0 && why[0] && memchr(why, '\0', sizeof why));
        CHECK(sym_size == 0);
    }
    int r2 = iop__module_check(path, IOP_SERVICE_SYMBOL, &first2, &sym_size2, why2, sizeof why2);
    CHECK(r2 == r && sym_size2 == sym_size && first2 == first && strcmp(why, why2) == 0);
    return 0;
}
