/* clock.h -- monotonic and wall-clock time in seconds, and deadline helpers. */
#ifndef SP_CLOCK_H
#define SP_CLOCK_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC: for deadlines and durations. */
double sp_now(void);

/* Seconds since the epoch: only for "since when" fields shown to people. */
double sp_wall(void);

/* Absolute CLOCK_MONOTONIC timespec for a deadline in sp_now() seconds. */
struct timespec sp_timespec(double when);

#endif
