/* A team: helper threads that lend a hand to whichever thread has work that
 * splits, without ever making it wait for a helper.
 *
 * cs_team_run(t, n, fn, arg) runs fn(arg, i) for every i in [0, n) and
 * returns when all have returned.  The calling thread claims tasks itself,
 * one at a time, and idle helpers claim the rest alongside it; a task is
 * never handed to a thread in advance, so when every helper is busy the
 * caller simply runs all n.  Several threads may run batches at once (the
 * helpers serve them in arrival order), and fn may itself call
 * cs_team_run.
 *
 * Helpers sleep on a condition variable when there is nothing to claim:
 * an idle team costs no CPU (unlike an OpenMP team, whose threads spin for
 * a while after each region, on cores the inference may need).
 *
 * The service owns one team, shared by its prep threads, to split a
 * result's overlay and PNG encoding (imageio's cs_img_par); the CLI's image
 * reader (src/cli/input.h, cli_pool) owns one to decode and encode several
 * files at once. */
#ifndef CS_UTIL_TEAM_H
#define CS_UTIL_TEAM_H

#include "camserve/common.h"

typedef struct cs_team cs_team;

/* helpers >= 0 (0: cs_team_run runs everything on the caller). */
cs_status cs_team_create(int helpers, cs_team **out, cs_error *err);
/* Joins the helpers; no batch may be running.  NULL is fine. */
void cs_team_destroy(cs_team *t);

/* Helpers waiting for work right now: a hint for how finely to split
 * (it may change the moment it is read).  0 for NULL. */
int cs_team_idle(cs_team *t);

/* t may be NULL (runs in order on the caller). */
void cs_team_run(cs_team *t, int n, void (*fn)(void *arg, int i), void *arg);

#endif
