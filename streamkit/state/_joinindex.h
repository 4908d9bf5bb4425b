/* The join index (`_joinindex.c`): what its module (`_joinmodule.c`) and the join's push
 * (`_joinpush.c`) use of it. */

#ifndef STREAMKIT_JOININDEX_H
#define STREAMKIT_JOININDEX_H

#include <Python.h>
#include <stdint.h>

typedef struct {
    int64_t ts, seq;
} Entry;

/* one key's records of one side */
typedef struct {
    PyObject_HEAD
    Entry *items;
    Py_ssize_t len, cap;
} Buf;

typedef struct {
    int64_t final;
    PyObject *key; /* bytes, owned */
} HeapItem;

typedef struct {
    HeapItem *items;
    Py_ssize_t len, cap;
} Heap;

typedef struct {
    PyObject_HEAD
    PyObject *keys[2]; /* dict: key bytes → Buf */
    Heap heap[2];
    int64_t final_after[2];
} JoinIndex;

extern PyTypeObject JoinIndexType;

/* `v` at `at`, 8 bytes big-endian (two's complement) */
void put_be64(char *at, int64_t v);
/* a side argument: 0 (left) or 1 (right), else -1 with ValueError set */
int parse_side(PyObject *arg, int *side);
/* 0 if `key` is bytes, else -1 with TypeError set */
int check_key(PyObject *key);
/* a + b, held to the int64 range */
int64_t add_clamped(int64_t a, int64_t b);
/* the first position of `b` whose time is >= ts */
Py_ssize_t from_time(Buf *b, int64_t ts);
/* the row key of a record: side, ts, seq (big-endian), then the key's bytes */
PyObject *row_of(int side, Entry *e, PyObject *key);
/* buffer a record (`JoinIndex.add`); -1 with an exception set */
int index_insert(JoinIndex *self, int side, PyObject *key, int64_t ts, int64_t seq);
/* the index's types readied; -1 with an exception set */
int joinindex_ready(void);

#endif
