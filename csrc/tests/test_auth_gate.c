/* Tests of csrc/core/auth_gate.c: rejected credentials fail fast per flavor, one trial per period. */
#include <string.h>

#include "auth_gate.h"
#include "checker.h"
#include "core_util.h"
#include "driver.h"
#include "registry.h"

static void
test_auth_gate_flavors_and_trials(void)
{
    sp_checker_config saved, cfg;
    sp_address addr = {"127.0.0.1", 1, NULL, NULL, NULL, 0};
    sp_endpoint *ep;
    double retry_in = -1, now = sp_now();
    int created, base = sp_registry_count();

    sp_checker_get_config(&saved);
    cfg = saved;
    cfg.interval = 1.0;
    cfg.backoff_max = 0.3;
    sp_checker_set_config(&cfg);
    ep = sp_registry_bind("auth-gate", "auth-gate", 4, &addr, &created);
    CHECK(ep != NULL);
    if (ep == NULL) {
        return;
    }
    sp_endpoint_pool_added(ep, 1);
    sp_endpoint_pool_added(ep, 2);

    CHECK_EQ(sp_auth_gate(ep, 1, now, &retry_in), SP_AUTH_PASS);
    sp_auth_rejected(ep, 1, now);
    CHECK(ep->auth_rejections == 1);
    /* Blocked until the backoff ends; the other flavor is not. */
    CHECK_EQ(sp_auth_gate(ep, 1, now + 0.1, &retry_in), SP_AUTH_BLOCKED);
    CHECKF(retry_in > 0.19 && retry_in < 0.21, "retry_in %.3f", retry_in);
    CHECK(sp_auth_gate(ep, 2, now + 0.1, NULL) == SP_AUTH_PASS);
    /* After it: exactly one trial, then blocked again. */
    CHECK(sp_auth_gate(ep, 1, now + 0.31, NULL) == SP_AUTH_TRIAL);
    CHECK(sp_auth_gate(ep, 1, now + 0.32, NULL) == SP_AUTH_BLOCKED);
    /* The trial failed: the backoff doubles, up to the interval. */
    sp_auth_rejected(ep, 1, now + 0.4);
    CHECK_EQ(sp_auth_gate(ep, 1, now + 0.99, &retry_in), SP_AUTH_BLOCKED);
    CHECK(sp_auth_gate(ep, 1, now + 1.01, NULL) == SP_AUTH_TRIAL);
    sp_auth_rejected(ep, 1, now + 1.1);
    sp_auth_rejected(ep, 1, now + 1.2);
    CHECK(sp_auth_gate(ep, 1, now + 2.19, NULL) == SP_AUTH_BLOCKED);
    CHECK(sp_auth_gate(ep, 1, now + 2.21, NULL) == SP_AUTH_TRIAL);
    /* A handshake that passed lifts it at once. */
    sp_auth_accepted(ep, 1);
    CHECK(ep->auth_rejections == 0);
    CHECK(sp_auth_gate(ep, 1, now + 2.22, NULL) == SP_AUTH_PASS);
    /* Unknown flavors are never blocked. */
    sp_auth_rejected(ep, 99, now);
    CHECK(ep->auth_rejections == 0);

    {
        sp_deferred after = {0};
        sp_endpoint_pool_removed(ep, 1, &after);
        sp_endpoint_pool_removed(ep, 2, &after);
        tp_after_done(&after);
    }
    sp_registry_unbind(ep);
    CHECK_EQ(sp_registry_count(), base);
    sp_checker_set_config(&saved);
}

static const sp_test tests[] = {
    {"auth_gate/flavors_and_trials", test_auth_gate_flavors_and_trials},
    {NULL, NULL},
};

SP_SUITE(auth_gate, tests)
