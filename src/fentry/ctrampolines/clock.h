/* The clock.  Records carry CLOCK_MONOTONIC nanoseconds (time.perf_counter_ns's
 * clock, the pure-Python twin's).  Where the kernel's own clocksource is the
 * TSC (it found it constant and synchronized across CPUs), the hot path
 * reads the TSC instead, a few nanoseconds against twenty, and a record's
 * reading is turned into CLOCK_MONOTONIC when it is read, by interpolation
 * between two readings of both clocks taken together (clock_point): the
 * ring's last read and now. */
#ifndef FENTRY_CLOCK_H
#define FENTRY_CLOCK_H

#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

extern int use_tsc;         /* set once, by clock_init */

void clock_init(void);

static inline long long
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline long long
raw_clock(void)   /* hot path */
{
#if defined(__x86_64__)
    if (use_tsc)
        return (long long)__rdtsc();
#endif
    return mono_ns();
}

typedef struct { long long raw, ns; } ClockPoint;

/* Both clocks at one instant: the monotonic reading bracketed by two TSC
 * readings, the narrowest bracket of a few tries.  A thread preempted
 * between two reads would pair them milliseconds apart, and skew every
 * timestamp interpolated from the pair. */
#define CLOCK_POINT_TRIES 8
#define CLOCK_POINT_TIGHT 20000     /* TSC ticks: a few microseconds */

static inline ClockPoint
clock_point(void)
{
    ClockPoint p;
    if (!use_tsc) {
        p.raw = p.ns = mono_ns();
        return p;
    }
    long long best = -1;
    for (int i = 0; i < CLOCK_POINT_TRIES; i++) {
        long long before = raw_clock();
        long long ns = mono_ns();
        long long width = raw_clock() - before;
        if (best < 0 || width < best) {
            best = width;
            p.raw = before + width / 2;
            p.ns = ns;
        }
        if (width < CLOCK_POINT_TIGHT)
            break;
    }
    return p;
}

/* A raw reading made between a and b, in CLOCK_MONOTONIC nanoseconds. */
static inline long long
to_ns(long long raw, ClockPoint a, ClockPoint b)
{
    if (!use_tsc)
        return raw;
    if (b.raw == a.raw)
        return a.ns;
    return a.ns + (long long)((__int128)(raw - a.raw) * (b.ns - a.ns) / (b.raw - a.raw));
}

#endif
