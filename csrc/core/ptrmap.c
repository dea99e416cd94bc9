/* ptrmap.c -- open-addressing hash map from a payload pointer to its connection record. */
#include <stdint.h>
#include <stdlib.h>

#include "ptrmap.h"

static size_t
slot_of(const void *key, size_t cap)
{
    /* Fibonacci hashing; the low bits of an object address are alignment. */
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & (cap - 1);
}

void
sp_ptrmap_init(sp_ptrmap *m)
{
    m->keys = NULL;
    m->values = NULL;
    m->cap = 0;
    m->len = 0;
}

void
sp_ptrmap_free(sp_ptrmap *m)
{
    free(m->keys);
    free(m->values);
    sp_ptrmap_init(m);
}

void
sp_ptrmap_clear(sp_ptrmap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        m->keys[i] = NULL;
    }
    m->len = 0;
}

void *
sp_ptrmap_get(const sp_ptrmap *m, const void *key)
{
    if (m->cap == 0) {
        return NULL;
    }
    for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key) {
            return m->values[i];
        }
        if (m->keys[i] == NULL) {
            return NULL;
        }
    }
}

static int
grow(sp_ptrmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    void **keys = calloc(cap, sizeof(void *));
    void **values = calloc(cap, sizeof(void *));
    if (keys == NULL || values == NULL) {
        free(keys);
        free(values);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] != NULL) {
            size_t j = slot_of(m->keys[i], cap);
            while (keys[j] != NULL) {
                j = (j + 1) & (cap - 1);
            }
            keys[j] = m->keys[i];
            values[j] = m->values[i];
        }
    }
    free(m->keys);
    free(m->values);
    m->keys = keys;
    m->values = values;
    m->cap = cap;
    return 0;
}

int
sp_ptrmap_put(sp_ptrmap *m, void *key, void *value)
{
    /* Keep the load factor at or under 1/2. */
    if ((m->len + 1) * 2 > m->cap && grow(m) < 0) {
        return -1;
    }
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != NULL && m->keys[i] != key) {
        i = (i + 1) & (m->cap - 1);
    }
    if (m->keys[i] == NULL) {
        m->len++;
    }
    m->keys[i] = key;
    m->values[i] = value;
    return 0;
}

void *
sp_ptrmap_del(sp_ptrmap *m, const void *key)
{
    if (m->cap == 0) {
        return NULL;
    }
    size_t mask = m->cap - 1;
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] != key) {
        if (m->keys[i] == NULL) {
            return NULL;
        }
        i = (i + 1) & mask;
    }
    void *value = m->values[i];
    /* Backward-shift: pull later members of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->keys[j] != NULL; j = (j + 1) & mask) {
        size_t home = slot_of(m->keys[j], m->cap);
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int home_after_hole = (j > hole) ? (home > hole && home <= j)
                                         : (home > hole || home <= j);
        if (!home_after_hole) {
            m->keys[hole] = m->keys[j];
            m->values[hole] = m->values[j];
            hole = j;
        }
    }
    m->keys[hole] = NULL;
    m->len--;
    return value;
}
