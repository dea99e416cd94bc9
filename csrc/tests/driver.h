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

/* Failures in the running test (reset by main before each test). */
extern int sp_test_failures;

void sp_check_failed(const char *file, int line, const char *expr,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Registers a file's table of tests under `name` (the driver runs the
   suites by name): SP_SUITE(endpoint, tests) once at the end of the file
   is all a new test file needs; the Makefile builds every .c here. */
void sp_register_suite(const char *name, const sp_test *tests);
#define SP_SUITE(name, tests)                                           \
    __attribute__((constructor)) static void                            \
    sp_register_##name(void)                                            \
    {                                                                   \
        sp_register_suite(#name, tests);                                \
    }

/* Record a failure (the test keeps running so cleanup still happens). */
#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond)) {                                                  \
            sp_check_failed(__FILE__, __LINE__, #cond, "%s", "");       \
        }                                                               \
    } while (0)

/* CHECK(a == b) that prints both values when they differ (integers,
   enums and pointers as integers, floating point with %g). */
#define SP_SHOWN(x)                                                     \
    _Generic((x), float: sp_show_double, double: sp_show_double,        \
             long double: sp_show_double, default: sp_show_integer)
#define CHECK_EQ(a, b)                                                  \
    do {                                                                \
        if (!((a) == (b))) {                                            \
            char shown_a_[48], shown_b_[48];                            \
            SP_SHOWN(a)(shown_a_, sizeof(shown_a_), (a));               \
            SP_SHOWN(b)(shown_b_, sizeof(shown_b_), (b));               \
            sp_check_failed(__FILE__, __LINE__, #a " == " #b,           \
                            "%s != %s", shown_a_, shown_b_);            \
        }                                                               \
    } while (0)
void sp_show_integer(char *buf, size_t size, long long value);
void sp_show_double(char *buf, size_t size, double value);

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
