/* Tests of csrc/core/registry.c: bind/unbind reference counts, configure, foreach. */
#include <stdlib.h>
#include <string.h>

#include "core_util.h"
#include "driver.h"
#include "registry.h"

static int
count_visit(sp_endpoint *ep, void *arg)
{
    int *n = arg;

    /* foreach holds a reference of its own while fn runs. */
    CHECKF(ep->refs >= 2 || strncmp(ep->key, "reg-", 4) != 0, "%s refs=%d", ep->key, ep->refs);
    (*n)++;
    return 0;
}

static int
stop_after_one(sp_endpoint *ep, void *arg)
{
    int *n = arg;

    (void)ep;
    (*n)++;
    return 1;
}

static int
unbind_inside(sp_endpoint *ep, void *arg)
{
    sp_endpoint *victim = arg;

    if (ep == victim) {
        /* Dropping the last pool reference inside fn is safe: the
           snapshot's reference keeps it alive until fn returns. */
        sp_registry_unbind(ep);
        CHECK(ep->refs == 1);
        CHECK(strcmp(ep->key, "reg-c") == 0);
    }
    return 0;
}

static void
test_bind_unbind(void)
{
    sp_address addr = {"127.0.0.1", 6390, NULL, "user", "secret", 0};
    sp_endpoint *a, *a2, *b;
    int created = -1, base = sp_registry_count(), n;

    a = sp_registry_bind("reg-a", "redis://a", 5, &addr, &created);
    CHECK(a != NULL && created == 1);
    if (a == NULL) {
        return;
    }
    CHECK(a->refs == 1 && a->max_connections == 5);
    CHECK(a->host != NULL && a->host != addr.host && strcmp(a->host, "127.0.0.1") == 0);
    CHECK(a->port == 6390 && a->unix_path == NULL);
    CHECK(a->username != NULL && strcmp(a->username, "user") == 0);
    CHECK(a->password != NULL && strcmp(a->password, "secret") == 0);
    CHECK(strcmp(a->label, "redis://a") == 0);

    /* Same key: same endpoint, the first budget stays. */
    a2 = sp_registry_bind("reg-a", "other label", 9, NULL, &created);
    CHECK(a2 == a && created == 0 && a->refs == 2 && a->max_connections == 5);
    CHECK(strcmp(a->label, "redis://a") == 0);

    b = sp_registry_bind("reg-b", "redis://b", 2, NULL, &created);
    CHECK(b != NULL && b != a && created == 1 && b->host == NULL && b->port == -1);
    CHECK_EQ(sp_registry_count(), base + 2);

    n = 0;
    sp_registry_foreach(count_visit, &n);
    CHECK_EQ(n, base + 2);
    CHECK(a->refs == 2 && (b == NULL || b->refs == 1));
    n = 0;
    sp_registry_foreach(stop_after_one, &n);
    CHECK_EQ(n, 1);
    CHECK(a->refs == 2 && (b == NULL || b->refs == 1));

    sp_registry_unbind(a2);
    CHECK(sp_registry_count() == base + 2 && a->refs == 1);
    sp_registry_unbind(a);
    CHECK_EQ(sp_registry_count(), base + 1);
    /* Gone: binding the key again makes a new endpoint with the new budget. */
    a = sp_registry_bind("reg-a", "redis://a", 7, NULL, &created);
    CHECK(a != NULL && created == 1 && a->max_connections == 7);
    if (a != NULL) {
        sp_registry_unbind(a);
    }
    if (b != NULL) {
        sp_registry_unbind(b);
    }
    CHECK_EQ(sp_registry_count(), base);
}

static void
test_foreach_unbind_inside(void)
{
    sp_endpoint *c;
    int created, base = sp_registry_count();

    c = sp_registry_bind("reg-c", "redis://c", 1, NULL, &created);
    if (c == NULL) {
        CHECK(c != NULL);
        return;
    }
    sp_registry_foreach(unbind_inside, c);
    CHECK_EQ(sp_registry_count(), base);
}

static void
test_configure(void)
{
    sp_deferred after = {0};
    sp_endpoint *ep, *bound, *made;
    tp_payload *p[3];
    int created, i, base = sp_registry_count();

    /* Existing endpoint: configure changes its budget at once. */
    bound = sp_registry_bind("reg-d", "redis://d", 3, NULL, &created);
    if (bound == NULL) {
        CHECK(bound != NULL);
        return;
    }
    for (i = 0; i < 3; i++) {
        p[i] = tp_connect(bound, bound, 1, -1);
    }
    ep = sp_registry_configure("reg-d", "ignored", 1, NULL, &after);
    CHECK(ep == bound && ep->refs == 2 && ep->max_connections == 1);
    CHECK(tp_after_done(&after) == 0 && ep->in_use == 3);
    sp_registry_unbind(ep);  /* the reference configure() took for the call */
    CHECK(bound->refs == 1);
    /* Over the new budget: returned connections close until it fits. */
    for (i = 0; i < 3; i++) {
        if (p[i] != NULL) {
            CHECK_EQ(sp_endpoint_release(bound, bound, p[i], -1, 1, &after), SP_REL_OK);
            CHECK(tp_after_done(&after) == (i < 2));
        }
    }
    CHECK(bound->total == 1 && bound->idle == 1);
    sp_endpoint_bury_idle_of(bound, 0, &after);
    tp_after_done(&after);
    sp_registry_unbind(bound);
    CHECK_EQ(sp_registry_count(), base);

    /* Unknown endpoint: created and pinned, so pools made later use its
       budget -- even after the caller drops the call's reference (as
       module.c's configure() does). */
    made = sp_registry_configure("reg-e", "redis://e", 4, NULL, &after);
    CHECK(made != NULL && tp_after_done(&after) == 0);
    if (made == NULL) {
        return;
    }
    CHECK(made->max_connections == 4);
    if (made->refs < 2 &&
        !tp_pending("sp_registry_configure() takes one reference for a new endpoint: the "
                    "caller's unbind frees it, so the budget is not pinned")) {
        sp_registry_unbind(made);
        CHECK_EQ(sp_registry_count(), base);
        return;
    }
    sp_registry_unbind(made);
    CHECK_EQ(sp_registry_count(), base + 1);
    bound = sp_registry_bind("reg-e", "redis://e", 10, NULL, &created);
    CHECK(bound == made && created == 0);
    if (bound != NULL) {
        CHECK(bound->max_connections == 4);
        sp_registry_unbind(bound);
        if (bound == made) {
            CHECK_EQ(sp_registry_count(), base + 1);
            sp_registry_unbind(bound);  /* drop the pin so the driver ends clean */
        }
    }
    CHECK_EQ(sp_registry_count(), base);
}

static const sp_test tests[] = {
    {"registry/bind_unbind", test_bind_unbind},
    {"registry/foreach_unbind_inside", test_foreach_unbind_inside},
    {"registry/configure", test_configure},
    {NULL, NULL},
};

SP_SUITE(registry, tests)
