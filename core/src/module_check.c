/* What the loader checks of a module file before the dynamic linker maps it: a
 * regular file (a FIFO would block the open, a directory is no module), an ELF
 * shared object for this machine, and every segment inside the file. A file cut
 * short (an interrupted copy or install) otherwise maps past its end and the
 * first touch of the missing pages kills the process with SIGBUS, inside dlopen. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "loader.h"

#if defined(__x86_64__)
#define OUR_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define OUR_MACHINE EM_AARCH64
#endif

#define MAX_PHDRS 64

static int refuse(int err, char *why, size_t whylen, const char *what)
{
    snprintf(why, whylen, "not a loadable module: %s", what);
    return err;
}

int iop__module_check(const char *path, char *why, size_t whylen)
{
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
    }
    close(fd);
    return r;
}
