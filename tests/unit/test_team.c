/* Unit tests for src/util/team.c: every task of a batch runs exactly once,
 * on the caller alone or with helpers, from several callers at once, and
 * nested; helpers that have finished count as idle again. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/team.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

enum { MAXN = 64 };

typedef struct tally {
    atomic_int runs[MAXN];
    atomic_int on_caller; /* tasks the calling thread ran */
    pthread_t caller;
    int spin_us;          /* work per task, so that helpers get a share */
} tally;

static void busy_us(int us) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < us);
}

static void count_task(void *arg, int i) {
    tally *t = arg;
    atomic_fetch_add(&t->runs[i], 1);
    if (pthread_equal(pthread_self(), t->caller)) atomic_fetch_add(&t->on_caller, 1);
    if (t->spin_us) busy_us(t->spin_us);
}

static void run_and_check(cs_team *team, int n, int spin_us, int *on_caller) {
    tally t;
    memset(&t, 0, sizeof t);
    t.caller = pthread_self();
    t.spin_us = spin_us;
    cs_team_run(team, n, count_task, &t);
    for (int i = 0; i < MAXN; i++) assert_int_equal(atomic_load(&t.runs[i]), i < n ? 1 : 0);
    if (on_caller) *on_caller = atomic_load(&t.on_caller);
}

static void test_no_team_runs_in_order_on_the_caller(void **state) {
    (void)state;
    int mine = 0;
    run_and_check(NULL, 7, 0, &mine);
    assert_int_equal(mine, 7);
    run_and_check(NULL, 0, 0, NULL);
    assert_int_equal(cs_team_idle(NULL), 0);
    cs_team_destroy(NULL);
}

static void test_no_helpers(void **state) {
    (void)state;
    cs_error err = {0};
    cs_team *t = NULL;
    assert_int_equal(cs_team_create(0, &t, &err), CS_OK);
    int mine = 0;
    run_and_check(t, 5, 0, &mine);
    assert_int_equal(mine, 5);
    assert_int_equal(cs_team_idle(t), 0);
    cs_team_destroy(t);
    assert_int_equal(cs_team_create(-1, &t, &err), CS_EINVAL);
    assert_non_null(strstr(err.msg, "helpers"));
}

static void test_helpers_share_the_work(void **state) {
    (void)state;
    cs_error err = {0};
    cs_team *t = NULL;
    assert_int_equal(cs_team_create(3, &t, &err), CS_OK);
    assert_int_equal(cs_team_idle(t), 3);
    /* Tasks of 2 ms each: helpers woken at the start claim some of them
     * (on a machine where they never get a core the caller runs them all,
     * so "some on helpers" is checked over many batches). */
    int helped = 0;
    for (int r = 0; r < 20; r++) {
        int mine = 0;
        run_and_check(t, 8, 2000, &mine);
        assert_in_range(mine, 1, 8); /* the caller always takes the first */
        helped += 8 - mine;
        /* finished helpers count as idle before the run returns */
        assert_int_equal(cs_team_idle(t), 3);
    }
    assert_true(helped > 0);
    for (int n = 1; n <= MAXN; n++) run_and_check(t, n, 0, NULL);
    cs_team_destroy(t);
}

typedef struct caller_arg {
    cs_team *team;
    int batches;
} caller_arg;

static void *caller_main(void *arg) {
    caller_arg *a = arg;
    for (int r = 0; r < a->batches; r++) run_and_check(a->team, 1 + r % 9, r % 3 ? 0 : 50, NULL);
    return NULL;
}

static void test_several_callers_at_once(void **state) {
    (void)state;
    cs_error err = {0};
    cs_team *t = NULL;
    assert_int_equal(cs_team_create(2, &t, &err), CS_OK);
    pthread_t th[4];
    caller_arg a = {t, 300};
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, caller_main, &a), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_int_equal(cs_team_idle(t), 2);
    cs_team_destroy(t);
}

typedef struct nest {
    cs_team *team;
    atomic_int inner[4][8];
} nest;

typedef struct inner_arg {
    nest *n;
    int outer;
} inner_arg;

static void inner_task(void *arg, int i) {
    inner_arg *a = arg;
    atomic_fetch_add(&a->n->inner[a->outer][i], 1);
    busy_us(100);
}

static void outer_task(void *arg, int i) {
    nest *n = arg;
    inner_arg a = {n, i};
    cs_team_run(n->team, 8, inner_task, &a); /* from the caller or a helper */
}

static void test_nested_runs_finish(void **state) {
    (void)state;
    cs_error err = {0};
    nest n;
    memset(&n, 0, sizeof n);
    assert_int_equal(cs_team_create(2, &n.team, &err), CS_OK);
    for (int r = 0; r < 50; r++) {
        memset(n.inner, 0, sizeof n.inner);
        cs_team_run(n.team, 4, outer_task, &n);
        for (int o = 0; o < 4; o++)
            for (int i = 0; i < 8; i++) assert_int_equal(atomic_load(&n.inner[o][i]), 1);
    }
    cs_team_destroy(n.team);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_team_runs_in_order_on_the_caller),
        cmocka_unit_test(test_no_helpers),
        cmocka_unit_test(test_helpers_share_the_work),
        cmocka_unit_test(test_several_callers_at_once),
        cmocka_unit_test(test_nested_runs_finish),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
