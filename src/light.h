/*
 * light.h: light tasks' shared stack, for the scheduler (sched.c).
 *
 * All of it runs on the loop's own thread, between tasks, on the
 * scheduler's stack. corio__light_reserve (loop.h) is the part a light
 * task calls itself, before it suspends.
 */
#ifndef CORIO_LIGHT_H
#define CORIO_LIGHT_H

#include <stdbool.h>

#include "loop.h"
#include "task.h"

/* Move the frames of the light task occupying l's shared stack to its
 * buffer, freeing the stack. false if the buffer could not be grown
 * (memory ran out and the occupant suspended without a big enough
 * reservation). */
bool corio__light_save_owner(corio__loop *l);
/* Give started light task t the shared stack: save the occupant, copy
 * t's frames in. false as corio__light_save_owner. */
bool corio__light_swap_in(corio__loop *l, corio_task *t);
/* t (ready, light, not the occupant) cannot have the stack now: it waits
 * on the stalled list until corio__light_retry. */
void corio__light_stall(corio__loop *l, corio_task *t);
/* The stalled tasks go back to the end of the ready list, in order. */
void corio__light_retry(corio__loop *l);

#endif /* CORIO_LIGHT_H */
