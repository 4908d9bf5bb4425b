/* The join's push (`_joinpush.c`): what its module (`_joinmodule.c`) uses of it. */

#ifndef STREAMKIT_JOINPUSH_H
#define STREAMKIT_JOINPUSH_H

#include <Python.h>

extern PyTypeObject JoinPushType;

/* the attribute names JoinPush uses interned, its type readied; -1 with an exception set */
int joinpush_ready(void);

#endif
