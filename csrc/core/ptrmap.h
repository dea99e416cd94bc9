/* ptrmap.h -- open-addressing hash map from a payload pointer to its connection record. */
#ifndef SP_PTRMAP_H
#define SP_PTRMAP_H

#include <stddef.h>

/* Linear probing with backward-shift deletion: no tombstones, so lookups
 * stay short however many checkouts and releases have happened. Keys are
 * never NULL. Not thread-safe: the owner's lock guards it. */
typedef struct {
    void **keys;
    void **values;
    size_t cap;   /* power of two, or 0 */
    size_t len;
} sp_ptrmap;

void sp_ptrmap_init(sp_ptrmap *m);
void sp_ptrmap_free(sp_ptrmap *m);
void *sp_ptrmap_get(const sp_ptrmap *m, const void *key);
/* Returns 0, or -1 when memory ran out (the map is unchanged). */
int sp_ptrmap_put(sp_ptrmap *m, void *key, void *value);
/* Returns the removed value, or NULL when the key was absent. */
void *sp_ptrmap_del(sp_ptrmap *m, const void *key);
void sp_ptrmap_clear(sp_ptrmap *m);

#endif
