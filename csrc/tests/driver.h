/* Minimal test framework shared by the sp_driver test files. */
#ifndef SP_DRIVER_H
#define SP_DRIVER_H

#include <stdio.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} sp_test;

/* Each test file exports one table ending with {NULL, NULL} and main.c
   lists the tables in its `suites` array. */
extern const sp_test sp_probe_tests[];
extern const sp_test sp_ptrmap_tests[];
extern const sp_test sp_endpoint_tests[];
extern const sp_test sp_registry_tests[];
extern const sp_test sp_checker_tests[];
extern const sp_test sp_fork_tests[];
extern const sp_test sp_watch_tests[];
extern const sp_test sp_auth_gate_tests[];
extern const sp_test sp_inbox_tests[];
extern const sp_test sp_host_budget_tests[];
extern const sp_test sp_host_health_tests[];
extern const sp_test sp_allowance_tests[];

/* Failures in the running test (reset by main before each test). */
extern int sp_test_failures;

void sp_check_failed(const char *file, int line, const char *expr,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record a failure (the test keeps running so cleanup still happens). */
#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond)) {                                                  \
            sp_check_failed(__FILE__, __LINE__, #cond, "%s", "");       \
        }                                                               \
    } while (0)

/* Same, with a printf-style explanation. */
#define CHECKF(cond, ...)                                               \
    do {                                                                \
        if (!(cond)) {                                                  \
            sp_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);    \
        }                                                               \
    } while (0)

/* Seconds on CLOCK_MONOTONIC (csrc/core/clock.c). */
double sp_now(void);

/* Print a note under the current test. */
void sp_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* SP_DRIVER_H */
