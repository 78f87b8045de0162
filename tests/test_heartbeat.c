/*
 * test_heartbeat.c - one key's heartbeat under a fake clock: the timeout
 * boundary (strictly longer than timeout_ms), each edge reported exactly
 * once, restored by the next beat, silence counted from init when no beat
 * came, clock steps of 0 and backwards, the timer deadline, and many random
 * cycles against a naive model.
 */
#include "heartbeat.h"
#include "tap.h"

#include <string.h>

static void test_boundary_from_init(void)
{
    struct heartbeat h;
    uint64_t silent = 99;
    int lost = 9;

    heartbeat_init(&h, 1000);
    IS(heartbeat_check(&h, 1000, 500, &lost, &silent), 0, "at init: alive");
    IS(lost, 0, "at init: not lost");
    IS(silent, 0, "at init: silent 0 ms");
    IS(heartbeat_check(&h, 1500, 500, &lost, &silent), 0,
       "silent exactly timeout_ms: no edge");
    IS(lost, 0, "silent exactly timeout_ms: alive (strictly longer)");
    IS(silent, 500, "silent 500 ms");
    IS(heartbeat_is_lost(&h, 1500, 500), 0, "is_lost agrees at the boundary");
    IS(heartbeat_is_lost(&h, 1501, 500), 1, "is_lost 1 ms later, unchecked");
    IS(heartbeat_check(&h, 1501, 500, &lost, &silent), HEARTBEAT_LOST,
       "timeout_ms + 1 with no beat since init: the lost edge");
    IS(lost, 1, "lost now");
    IS(silent, 501, "silent 501 ms at the edge");
    IS(h.losses, 1, "one loss counted");
    IS(heartbeat_check(&h, 1501, 500, &lost, NULL), 0,
       "same instant again: no second edge");
    IS(heartbeat_check(&h, 9000, 500, &lost, &silent), 0,
       "much later: still no second edge");
    IS(lost, 1, "still lost");
    IS(silent, 8000, "silence keeps growing");
    IS(h.losses, 1, "still one loss");
}

static void test_restored_by_next_beat(void)
{
    struct heartbeat h;
    uint64_t silent = 0;
    int lost = 1;

    heartbeat_init(&h, 0);
    IS(heartbeat_beat(&h, 100, 200, &silent), 0, "a beat while alive: none");
    IS(silent, 100, "it ended 100 ms of silence");
    IS(heartbeat_check(&h, 300, 200, &lost, NULL), 0,
       "silence counts from the beat, not from init: 200 ms, alive");
    IS(heartbeat_check(&h, 301, 200, &lost, NULL), HEARTBEAT_LOST,
       "201 ms after the beat: lost");
    IS(heartbeat_beat(&h, 450, 200, &silent), HEARTBEAT_RESTORED,
       "the next beat restores");
    IS(silent, 350, "restored after 350 ms of silence");
    IS(heartbeat_check(&h, 450, 200, &lost, NULL), 0, "no edge after it");
    IS(lost, 0, "alive again");
    IS(heartbeat_beat(&h, 460, 200, NULL), 0, "a second beat: no edge");
    IS(h.beats, 3, "beats counted");
    IS(heartbeat_check(&h, 661, 200, &lost, NULL), HEARTBEAT_LOST,
       "lost again: a new edge");
    IS(h.losses, 2, "two losses");
}

/* A beat after a silence no check reported: both edges at once. */
static void test_beat_reveals_unchecked_loss(void)
{
    struct heartbeat h;
    uint64_t silent = 0;
    int lost = 1;

    heartbeat_init(&h, 0);
    IS(heartbeat_beat(&h, 1000, 100, &silent),
       HEARTBEAT_LOST | HEARTBEAT_RESTORED,
       "unchecked silence of 1000 ms: lost and restored by one beat");
    IS(silent, 1000, "both with the silence it ended");
    IS(h.losses, 1, "the loss is counted");
    IS(heartbeat_check(&h, 1000, 100, &lost, NULL), 0, "nothing after");
    IS(lost, 0, "alive");
    IS(heartbeat_beat(&h, 1100, 100, NULL), 0,
       "silence of exactly timeout_ms ended by a beat: no edges");
}

/* Once lost, only a beat revives it, whatever timeout the caller passes. */
static void test_lost_until_beat(void)
{
    struct heartbeat h;
    int lost = 0;

    heartbeat_init(&h, 0);
    heartbeat_check(&h, 101, 100, &lost, NULL);
    IS(heartbeat_check(&h, 150, 100000, &lost, NULL), 0,
       "a raised timeout: no edge");
    IS(lost, 1, "a raised timeout does not revive it");
    IS(heartbeat_is_lost(&h, 150, 100000), 1, "is_lost agrees");
    IS(heartbeat_beat(&h, 160, 100000, NULL), HEARTBEAT_RESTORED,
       "the beat restores, even under the raised timeout");
}

static void test_clock_steps_of_zero(void)
{
    struct heartbeat h;
    unsigned edges = 0;
    uint64_t silent = 1;
    int i, lost = 1;

    heartbeat_init(&h, 5000);
    for (i = 0; i < 100; i++) {
        edges |= heartbeat_beat(&h, 5000, 1, &silent);
        edges |= heartbeat_check(&h, 5000, 1, &lost, NULL);
    }
    IS(edges, 0, "100 beats and checks at one instant: no edge");
    IS(silent, 0, "silent 0 ms");
    IS(lost, 0, "alive");
    IS(heartbeat_check(&h, 5001, 1, &lost, NULL), 0, "1 ms = timeout: alive");
    IS(heartbeat_check(&h, 5002, 1, &lost, NULL), HEARTBEAT_LOST,
       "2 ms > timeout 1: lost");
    for (i = 0; i < 100; i++)
        edges |= heartbeat_check(&h, 5002, 1, &lost, NULL);
    IS(edges, 0, "checks at the same instant: the edge only once");
    IS(heartbeat_beat(&h, 5002, 1, NULL), HEARTBEAT_RESTORED,
       "a beat at that instant restores");
    IS(heartbeat_beat(&h, 5002, 1, NULL), 0, "and the next one is plain");

    /* timeout_ms 0: any silence of 1 ms or more is too long. */
    heartbeat_init(&h, 0);
    IS(heartbeat_check(&h, 0, 0, &lost, NULL), 0, "timeout 0, silent 0: alive");
    IS(heartbeat_check(&h, 1, 0, &lost, NULL), HEARTBEAT_LOST,
       "timeout 0, silent 1: lost");
}

static void test_clock_backwards(void)
{
    struct heartbeat h;
    uint64_t silent = 1;
    int lost = 1;

    heartbeat_init(&h, 1000);
    IS(heartbeat_check(&h, 10, 5, &lost, &silent), 0,
       "an older now_ms: no time passed");
    IS(silent, 0, "silent 0");
    heartbeat_beat(&h, 2000, 500, NULL);
    heartbeat_beat(&h, 1500, 500, &silent);
    IS(h.last_ms, 2000, "an older beat does not move the last beat back");
    IS(silent, 0, "and ended no silence");
    IS(heartbeat_check(&h, 2500, 500, &lost, NULL), 0,
       "silence still counted from the later beat");
}

static void test_due(void)
{
    struct heartbeat h;
    int lost = 0;

    heartbeat_init(&h, 100);
    IS(heartbeat_due_ms(&h, 50), 151, "due: last + timeout + 1");
    IS(heartbeat_check(&h, heartbeat_due_ms(&h, 50) - 1, 50, &lost, NULL), 0,
       "1 ms before due: nothing");
    IS(heartbeat_check(&h, heartbeat_due_ms(&h, 50), 50, &lost, NULL),
       HEARTBEAT_LOST, "at due: the edge");
    IS(heartbeat_due_ms(&h, 50), 0, "lost: nothing more due");
    heartbeat_beat(&h, 400, 50, NULL);
    IS(heartbeat_due_ms(&h, 50), 451, "after the beat: due again");
    OK(heartbeat_due_ms(&h, UINT64_MAX) == UINT64_MAX &&
           heartbeat_due_ms(&h, UINT64_MAX - 400) == UINT64_MAX,
       "a huge timeout saturates instead of wrapping");
    IS(heartbeat_check(&h, UINT64_MAX, UINT64_MAX, &lost, NULL), 0,
       "timeout UINT64_MAX: never lost");
}

/* ---- many cycles against a naive model ---- */

static uint64_t rnd_state = 12345;

static uint64_t rnd(void)
{
    uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/*
 * Random beats and checks with steps of 0, around the boundary and far
 * beyond it.  The model keeps the last beat and whether the loss was
 * reported, from the contract alone; every call's edges, lost_now and
 * silence must match it, and the edge stream must alternate lost,
 * restored, lost, ... with exactly one restored per beat that ended a
 * loss.
 */
static void test_cycles(void)
{
    static const uint64_t timeouts[] = {1, 7, 250, 3000};
    size_t ti;

    for (ti = 0; ti < sizeof(timeouts) / sizeof(timeouts[0]); ti++) {
        uint64_t to = timeouts[ti], now = 1000, m_last = now, silent;
        int m_lost = 0, lost, step, ok = 1, alternate = 1, expect_lost = 1;
        long lost_edges = 0, restored_edges = 0, both = 0;
        struct heartbeat h;
        char why[200] = "";

        heartbeat_init(&h, now);
        for (step = 0; step < 200000 && ok; step++) {
            uint64_t k = rnd() % 100, m_silent;
            unsigned got, want = 0;

            if (k < 20)
                now += 0;
            else if (k < 50)
                now += rnd() % (to + 1);
            else if (k < 70)
                now += to - (to ? rnd() % 2 : 0); /* onto the boundary */
            else if (k < 90)
                now += 1;
            else
                now += to + 1 + rnd() % (3 * to + 1);
            m_silent = now - m_last;
            if (rnd() % 3 == 0) {
                if (!m_lost && m_silent > to)
                    want = HEARTBEAT_LOST;
                if (m_lost || want)
                    want |= HEARTBEAT_RESTORED;
                got = heartbeat_beat(&h, now, to, &silent);
                m_lost = 0;
                m_last = now;
            } else {
                if (!m_lost && m_silent > to) {
                    want = HEARTBEAT_LOST;
                    m_lost = 1;
                }
                got = heartbeat_check(&h, now, to, &lost, &silent);
                if (lost != m_lost) {
                    snprintf(why, sizeof(why), "step %d: lost_now %d, model %d",
                             step, lost, m_lost);
                    ok = 0;
                }
            }
            if (got != want || silent != m_silent) {
                snprintf(why, sizeof(why),
                         "step %d t=%llu: edges %u silent %llu, model %u %llu",
                         step, (unsigned long long)now, got,
                         (unsigned long long)silent, want,
                         (unsigned long long)m_silent);
                ok = 0;
            }
            /* The edge stream alternates, lost first. */
            if (got & HEARTBEAT_LOST) {
                alternate &= expect_lost;
                expect_lost = 0;
                lost_edges++;
            }
            if (got & HEARTBEAT_RESTORED) {
                alternate &= !expect_lost;
                expect_lost = 1;
                restored_edges++;
            }
            both += got == (HEARTBEAT_LOST | HEARTBEAT_RESTORED);
        }
        if (!ok)
            DIAG("timeout %llu: %s", (unsigned long long)to, why);
        OK(ok, "timeout %llu ms: %d random steps match the model",
           (unsigned long long)to, step);
        OK(alternate && lost_edges - restored_edges == (expect_lost ? 0 : 1),
           "timeout %llu ms: edges alternate, lost first (%ld lost, %ld "
           "restored, %ld by one beat)",
           (unsigned long long)to, lost_edges, restored_edges, both);
        OK(lost_edges > 1000 && both > 100 && (uint64_t)lost_edges == h.losses,
           "timeout %llu ms: many cycles of both kinds, losses counted",
           (unsigned long long)to);
    }
}

int main(void)
{
    test_boundary_from_init();
    test_restored_by_next_beat();
    test_beat_reveals_unchecked_loss();
    test_lost_until_beat();
    test_clock_steps_of_zero();
    test_clock_backwards();
    test_due();
    test_cycles();
    return tap_done();
}
