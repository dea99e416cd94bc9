/* sp_driver entry point: runs every suite, prints "N passed, M failed". */
#include "driver.h"

#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_proc.h"
#include "watch.h"

int sp_test_failures;

/* Suites as the test files registered them (SP_SUITE), run in name order. */
#define SP_MAX_SUITES 64
static struct {
    const char *name;
    const sp_test *tests;
} suites[SP_MAX_SUITES];
static size_t n_suites;

void
sp_register_suite(const char *name, const sp_test *tests)
{
    if (n_suites == SP_MAX_SUITES) {
        fprintf(stderr, "sp_driver: more than %d suites\n", SP_MAX_SUITES);
        abort();
    }
    size_t i = n_suites++;
    while (i > 0 && strcmp(suites[i - 1].name, name) > 0) {
        suites[i] = suites[i - 1];
        i--;
    }
    suites[i].name = name;
    suites[i].tests = tests;
}

void
sp_show_integer(char *buf, size_t size, long long value)
{
    snprintf(buf, size, "%lld", value);
}

void
sp_show_double(char *buf, size_t size, double value)
{
    snprintf(buf, size, "%.17g", value);
}

void
sp_check_failed(const char *file, int line, const char *expr,
                const char *fmt, ...)
{
    va_list ap;

    sp_test_failures++;
    fprintf(stderr, "    FAIL %s:%d: %s", file, line, expr);
    if (fmt[0] != '\0') {
        fprintf(stderr, ": ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    fflush(stderr);
}

void
sp_note(const char *fmt, ...)
{
    va_list ap;

    printf("    note: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int
count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1;       /* the DIR's own fd */
}

static int
selected(const char *name, int argc, char **argv)
{
    int i;

    if (argc < 2) {
        return 1;
    }
    for (i = 1; i < argc; i++) {
        if (strstr(name, argv[i]) != NULL) {
            return 1;
        }
    }
    return 0;
}

/* Usage: sp_driver [substring...]  (run only tests whose name matches) */
int
main(int argc, char **argv)
{
    int passed = 0, failed = 0, fds_before, fds_after;
    size_t s;

    /* Keep SIGPIPE fatal: a probe that writes to a dead peer without
       MSG_NOSIGNAL must kill the driver, not pass silently. */
    signal(SIGPIPE, SIG_DFL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The watch's epoll set and eventfd live as long as the process: open
       them first so that they count on both sides. */
    sp_watch_open();
    fds_before = count_open_fds();

    for (s = 0; s < n_suites; s++) {
        const sp_test *t;
        for (t = suites[s].tests; t->name != NULL; t++) {
            double t0;
            if (!selected(t->name, argc, argv)) {
                continue;
            }
            sp_test_failures = 0;
            t0 = sp_now();
            t->fn();
            if (sp_test_failures == 0) {
                passed++;
                printf("ok   %-40s %.3fs\n", t->name, sp_now() - t0);
            }
            else {
                failed++;
                printf("FAIL %-40s %.3fs\n", t->name, sp_now() - t0);
            }
        }
    }
    sp_redis_kill_all();

    fds_after = count_open_fds();
    if (fds_before != fds_after) {
        failed++;
        printf("FAIL %-40s before=%d after=%d\n", "no_fd_leak", fds_before,
               fds_after);
    }
    else {
        passed++;
        printf("ok   %-40s %d\n", "no_fd_leak", fds_after);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
