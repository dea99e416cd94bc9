/* Tests of csrc/core/ptrmap.c: random operations against a reference array, wrap-around deletion. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#include "ptrmap.h"

#define NKEYS 600

static void *
key_of(int k)
{
    /* Object-like addresses: 16-byte aligned, never NULL. */
    return (void *)(uintptr_t)(0x10000 + (uintptr_t)k * 16);
}

static void *
val_of(int k, int gen)
{
    return (void *)(uintptr_t)(0x900000 + (uintptr_t)k * 8 + (uintptr_t)gen * 0x100000);
}

/* xorshift32, fixed seed: reproducible. */
static uint32_t
rnd(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Every key in a probe run is reachable from its home slot. */
static void
check_all(const sp_ptrmap *m, void *const *ref, size_t len)
{
    size_t n = 0, i;
    int k;

    for (k = 0; k < NKEYS; k++) {
        void *got = sp_ptrmap_get(m, key_of(k));
        if (got != ref[k]) {
            CHECKF(0, "key %d: got %p, expected %p", k, got, ref[k]);
            return;
        }
    }
    for (i = 0; i < m->cap; i++) {
        n += m->keys[i] != NULL;
    }
    CHECKF(n == len && m->len == len, "occupied %zu, len %zu, expected %zu", n, m->len, len);
    CHECK(m->cap == 0 || (m->cap & (m->cap - 1)) == 0);
    CHECK(m->cap == 0 || m->len * 2 <= m->cap);
}

static void
test_ptrmap_basic(void)
{
    sp_ptrmap m;

    sp_ptrmap_init(&m);
    CHECK(sp_ptrmap_get(&m, key_of(1)) == NULL);
    CHECK(sp_ptrmap_del(&m, key_of(1)) == NULL);
    CHECK_EQ(sp_ptrmap_put(&m, key_of(1), val_of(1, 0)), 0);
    CHECK(m.len == 1 && m.cap == 16);
    CHECK(sp_ptrmap_get(&m, key_of(1)) == val_of(1, 0));
    /* Overwrite keeps the length. */
    CHECK_EQ(sp_ptrmap_put(&m, key_of(1), val_of(1, 1)), 0);
    CHECK_EQ(m.len, 1);
    CHECK(sp_ptrmap_get(&m, key_of(1)) == val_of(1, 1));
    CHECK(sp_ptrmap_del(&m, key_of(2)) == NULL);
    CHECK(sp_ptrmap_del(&m, key_of(1)) == val_of(1, 1));
    CHECK_EQ(m.len, 0);
    CHECK(sp_ptrmap_get(&m, key_of(1)) == NULL);
    CHECK_EQ(sp_ptrmap_put(&m, key_of(3), val_of(3, 0)), 0);
    sp_ptrmap_clear(&m);
    CHECK(m.len == 0 && m.cap == 16);
    CHECK(sp_ptrmap_get(&m, key_of(3)) == NULL);
    CHECK_EQ(sp_ptrmap_put(&m, key_of(3), val_of(3, 0)), 0);
    CHECK(sp_ptrmap_get(&m, key_of(3)) == val_of(3, 0));
    sp_ptrmap_free(&m);
    CHECK(m.cap == 0 && m.len == 0 && m.keys == NULL);
}

static void
test_ptrmap_random(void)
{
    static void *ref[NKEYS];
    sp_ptrmap m;
    uint32_t seed = 0x2545F491u;
    size_t len = 0;
    int op;

    memset(ref, 0, sizeof(ref));
    sp_ptrmap_init(&m);
    for (op = 0; op < 60000 && sp_test_failures == 0; op++) {
        int k = (int)(rnd(&seed) % NKEYS);
        uint32_t what = rnd(&seed) % 100;
        /* Grow phase, then a shrink phase, then mixed. */
        int insert_bias = op < 20000 ? 70 : op < 40000 ? 30 : 50;
        if ((int)what < insert_bias) {
            void *v = val_of(k, op & 7);
            CHECK_EQ(sp_ptrmap_put(&m, key_of(k), v), 0);
            if (ref[k] == NULL) {
                len++;
            }
            ref[k] = v;
        }
        else {
            void *got = sp_ptrmap_del(&m, key_of(k));
            CHECKF(got == ref[k], "del %d: got %p expected %p", k, got, ref[k]);
            if (ref[k] != NULL) {
                len--;
            }
            ref[k] = NULL;
        }
        if (op % 97 == 0) {
            check_all(&m, ref, len);
        }
    }
    check_all(&m, ref, len);
    /* Empty it completely in a random order. */
    while (len > 0 && sp_test_failures == 0) {
        int k = (int)(rnd(&seed) % NKEYS);
        if (ref[k] != NULL) {
            CHECK(sp_ptrmap_del(&m, key_of(k)) == ref[k]);
            ref[k] = NULL;
            len--;
        }
    }
    check_all(&m, ref, len);
    sp_ptrmap_free(&m);
}

/* Index of key in a fresh map holding only it: its home slot at cap 16. */
static size_t
home16(void *key)
{
    sp_ptrmap m;
    size_t i, home = (size_t)-1;

    sp_ptrmap_init(&m);
    if (sp_ptrmap_put(&m, key, key) == 0) {
        for (i = 0; i < m.cap; i++) {
            if (m.keys[i] == key) {
                home = i;
            }
        }
    }
    sp_ptrmap_free(&m);
    return home;
}

/* Up to n distinct keys (not in `avoid`) whose home slot at cap 16 is h. */
static int
keys_with_home(size_t h, void **out, int n, int start)
{
    int found = 0, k;

    for (k = start; k < start + 100000 && found < n; k++) {
        if (home16(key_of(k)) == h) {
            out[found++] = key_of(k);
        }
    }
    return found;
}

static size_t
slot_of_key(const sp_ptrmap *m, void *key)
{
    size_t i;

    for (i = 0; i < m->cap; i++) {
        if (m->keys[i] == key) {
            return i;
        }
    }
    return (size_t)-1;
}

static void
test_ptrmap_wraparound_delete(void)
{
    void *a[3], *b[1], *c[1];
    sp_ptrmap m;
    int i;

    /* a0 a1 a2 live at home 15 -> slots 15, 0, 1; b (home 0) -> 2; c (home 1) -> 3. */
    if (keys_with_home(15, a, 3, 1) != 3 || keys_with_home(0, b, 1, 1) != 1 ||
        keys_with_home(1, c, 1, 1) != 1) {
        CHECKF(0, "could not find keys with the wanted home slots");
        return;
    }
    sp_ptrmap_init(&m);
    for (i = 0; i < 3; i++) {
        CHECK_EQ(sp_ptrmap_put(&m, a[i], a[i]), 0);
    }
    CHECK_EQ(sp_ptrmap_put(&m, b[0], b[0]), 0);
    CHECK_EQ(sp_ptrmap_put(&m, c[0], c[0]), 0);
    CHECK(m.cap == 16 && m.len == 5);
    CHECK_EQ(slot_of_key(&m, a[0]), 15);
    CHECK_EQ(slot_of_key(&m, a[1]), 0);
    CHECK_EQ(slot_of_key(&m, a[2]), 1);
    CHECK_EQ(slot_of_key(&m, b[0]), 2);
    CHECK_EQ(slot_of_key(&m, c[0]), 3);

    /* Deleting at 15 shifts the whole run back across the wrap. */
    CHECK(sp_ptrmap_del(&m, a[0]) == a[0]);
    CHECK_EQ(slot_of_key(&m, a[1]), 15);
    CHECK_EQ(slot_of_key(&m, a[2]), 0);
    CHECK_EQ(slot_of_key(&m, b[0]), 1);
    CHECK_EQ(slot_of_key(&m, c[0]), 2);
    CHECK(m.keys[3] == NULL);
    for (i = 1; i < 3; i++) {
        CHECK(sp_ptrmap_get(&m, a[i]) == a[i]);
    }
    CHECK(sp_ptrmap_get(&m, b[0]) == b[0]);
    CHECK(sp_ptrmap_get(&m, c[0]) == c[0]);
    CHECK(sp_ptrmap_get(&m, a[0]) == NULL);

    /* Deleting b (now at 1, home 0): c (home 1) moves into the hole. */
    CHECK(sp_ptrmap_del(&m, b[0]) == b[0]);
    CHECK_EQ(slot_of_key(&m, c[0]), 1);
    CHECK(sp_ptrmap_get(&m, a[2]) == a[2]);

    /* Deleting a1 at 15: a2 (home 15, at 0) moves to 15; c stays at its home 1. */
    CHECK(sp_ptrmap_del(&m, a[1]) == a[1]);
    CHECK_EQ(slot_of_key(&m, a[2]), 15);
    CHECK_EQ(slot_of_key(&m, c[0]), 1);
    CHECK(m.keys[0] == NULL);
    CHECK(sp_ptrmap_get(&m, c[0]) == c[0]);
    CHECK(sp_ptrmap_get(&m, a[2]) == a[2]);
    CHECK_EQ(m.len, 2);
    sp_ptrmap_free(&m);
}

static const sp_test tests[] = {
    {"ptrmap/basic", test_ptrmap_basic},
    {"ptrmap/random_vs_reference", test_ptrmap_random},
    {"ptrmap/wraparound_backward_shift", test_ptrmap_wraparound_delete},
    {NULL, NULL},
};

SP_SUITE(ptrmap, tests)
