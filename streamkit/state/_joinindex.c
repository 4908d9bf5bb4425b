/* A stream-stream join's in-memory index in C: the native path of `join_index.JoinIndex`
 * (its push, `JoinPartition.push`, is `_joinpush.c`; the module, `_joinmodule.c`),
 * whose Python class is the reference (and what runs with STREAMKIT_PURE_PYTHON=1 or without
 * a compiler). Same methods, same answers, same order.
 *
 * `JoinIndex(final_after_left, final_after_right)`; per side (0 left, 1 right):
 *   - key bytes → that key's buffered records, (event time, seq) pairs in (time, seq) order
 *     (16 bytes a record, a Python dict of small C objects);
 *   - a min-heap of (the watermark after which a key's earliest record is final, key), one
 *     entry per key and earliest time (an older one is skipped when popped), ties by the
 *     key's bytes, as a heap of Python tuples orders them.
 * A record of side s at t is final once the watermark passed t + final_after[s].
 *
 *   add(side, key, ts, seq)           buffer a record (seqs only grow: after equal times)
 *   between(side, key, lo, hi)        [(ts, row), ...] of the side's records of `key` with
 *                                     lo <= ts <= hi, or None; `row` is the record's row key
 *                                     in the join's table: side (1 byte), ts, seq (8 bytes
 *                                     each, big-endian, signed), then the key's bytes
 *   purge(side, watermark, forget)    the rows of every record of the side the watermark made
 *                                     final, removed from the index, key by key in heap
 *                                     order, oldest first; each also popped from the dicts of
 *                                     `forget` (a tuple, may be empty) */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_joinindex.h"

static PyTypeObject BufType;

static void
buf_dealloc(Buf *self)
{
    PyMem_Free(self->items);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject BufType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streamkit.state._joinindex.Buffered",
    .tp_basicsize = sizeof(Buf),
    .tp_dealloc = (destructor)buf_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

/* a heap entry is before another: by time, then by the key's bytes (as tuples compare) */
static int
heap_less(HeapItem *a, HeapItem *b)
{
    if (a->final != b->final)
        return a->final < b->final;
    Py_ssize_t la = PyBytes_GET_SIZE(a->key), lb = PyBytes_GET_SIZE(b->key);
    int c = memcmp(PyBytes_AS_STRING(a->key), PyBytes_AS_STRING(b->key), la < lb ? la : lb);
    return c < 0 || (c == 0 && la < lb);
}

static int
heap_push(Heap *h, int64_t final, PyObject *key)
{
    if (h->len == h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 64;
        HeapItem *items = PyMem_Realloc(h->items, cap * sizeof(HeapItem));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        h->items = items;
        h->cap = cap;
    }
    Py_ssize_t i = h->len++;
    HeapItem item = {final, Py_NewRef(key)};
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!heap_less(&item, &h->items[parent]))
            break;
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = item;
    return 0;
}

/* the smallest entry, removed; its key's reference passes to the caller */
static HeapItem
heap_pop(Heap *h)
{
    HeapItem top = h->items[0];
    HeapItem last = h->items[--h->len];
    Py_ssize_t i = 0, n = h->len;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && heap_less(&h->items[child + 1], &h->items[child]))
            child++;
        if (!heap_less(&h->items[child], &last))
            break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (n > 0)
        h->items[i] = last;
    return top;
}

/* a + b, held to the int64 range (times near its ends are never final, or always) */
int64_t
add_clamped(int64_t a, int64_t b)
{
    int64_t sum;
    if (__builtin_add_overflow(a, b, &sum))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return sum;
}

int
parse_side(PyObject *arg, int *side)
{
    long s = PyLong_AsLong(arg);
    if (s == -1 && PyErr_Occurred())
        return -1;
    if (s != 0 && s != 1) {
        PyErr_SetString(PyExc_ValueError, "side must be 0 (left) or 1 (right)");
        return -1;
    }
    *side = (int)s;
    return 0;
}

static int
parse_i64(PyObject *arg, int64_t *out)
{
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)v;
    return 0;
}

int
check_key(PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "a join index key must be bytes");
        return -1;
    }
    return 0;
}

/* the first position whose entry is after `ts` (bisect_right on time) */
static Py_ssize_t
after_time(Buf *b, int64_t ts)
{
    Py_ssize_t lo = 0, hi = b->len;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (ts < b->items[mid].ts)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* the first position whose time is >= ts (bisect_left on time) */
Py_ssize_t
from_time(Buf *b, int64_t ts)
{
    Py_ssize_t lo = 0, hi = b->len;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (b->items[mid].ts < ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void
put_be64(char *at, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--) {
        at[i] = (char)(u & 0xff);
        u >>= 8;
    }
}

PyObject *
row_of(int side, Entry *e, PyObject *key)
{
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    PyObject *row = PyBytes_FromStringAndSize(NULL, 17 + klen);
    if (row == NULL)
        return NULL;
    char *at = PyBytes_AS_STRING(row);
    at[0] = (char)side;
    put_be64(at + 1, e->ts);
    put_be64(at + 9, e->seq);
    memcpy(at + 17, PyBytes_AS_STRING(key), klen);
    return row;
}

static int
index_init(JoinIndex *self, PyObject *args, PyObject *kwds)
{
    long long left, right;
    static char *kwlist[] = {"final_after_left", "final_after_right", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LL", kwlist, &left, &right))
        return -1;
    self->final_after[0] = (int64_t)left;
    self->final_after[1] = (int64_t)right;
    for (int s = 0; s < 2; s++) {
        if (self->keys[s] == NULL && (self->keys[s] = PyDict_New()) == NULL)
            return -1;
    }
    return 0;
}

static void
index_dealloc(JoinIndex *self)
{
    for (int s = 0; s < 2; s++) {
        Py_CLEAR(self->keys[s]);
        for (Py_ssize_t i = 0; i < self->heap[s].len; i++)
            Py_DECREF(self->heap[s].items[i].key);
        PyMem_Free(self->heap[s].items);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

int
index_insert(JoinIndex *self, int side, PyObject *key, int64_t ts, int64_t seq)
{
    Buf *b = (Buf *)PyDict_GetItemWithError(self->keys[side], key);
    if (b == NULL) {
        if (PyErr_Occurred())
            return -1;
        b = PyObject_New(Buf, &BufType);
        if (b == NULL)
            return -1;
        b->items = NULL;
        b->len = b->cap = 0;
        int failed = PyDict_SetItem(self->keys[side], key, (PyObject *)b);
        Py_DECREF(b); /* the dict holds it */
        if (failed < 0)
            return -1;
    }
    if (b->len == b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 4;
        Entry *items = PyMem_Realloc(b->items, cap * sizeof(Entry));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->items = items;
        b->cap = cap;
    }
    Py_ssize_t at = after_time(b, ts);
    memmove(&b->items[at + 1], &b->items[at], (b->len - at) * sizeof(Entry));
    b->items[at].ts = ts;
    b->items[at].seq = seq;
    b->len++;
    if (at == 0 && heap_push(&self->heap[side], add_clamped(ts, self->final_after[side]), key) < 0)
        return -1;
    return 0;
}

static PyObject *
index_add(JoinIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    int side;
    int64_t ts, seq;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "add(side, key, ts, seq)");
        return NULL;
    }
    PyObject *key = args[1];
    if (parse_side(args[0], &side) < 0 || check_key(key) < 0 || parse_i64(args[2], &ts) < 0 ||
        parse_i64(args[3], &seq) < 0)
        return NULL;
    if (index_insert(self, side, key, ts, seq) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
index_between(JoinIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    int side;
    int64_t lo, hi;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "between(side, key, lo, hi)");
        return NULL;
    }
    PyObject *key = args[1];
    if (parse_side(args[0], &side) < 0 || check_key(key) < 0 || parse_i64(args[2], &lo) < 0 ||
        parse_i64(args[3], &hi) < 0)
        return NULL;
    Buf *b = (Buf *)PyDict_GetItemWithError(self->keys[side], key);
    if (b == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t i = from_time(b, lo), end = i;
    while (end < b->len && b->items[end].ts <= hi)
        end++;
    if (end == i)
        Py_RETURN_NONE;
    PyObject *found = PyList_New(end - i);
    if (found == NULL)
        return NULL;
    for (Py_ssize_t j = i; j < end; j++) {
        PyObject *ts = PyLong_FromLongLong(b->items[j].ts);
        PyObject *row = ts == NULL ? NULL : row_of(side, &b->items[j], key);
        PyObject *pair = row == NULL ? NULL : PyTuple_Pack(2, ts, row);
        Py_XDECREF(ts);
        Py_XDECREF(row);
        if (pair == NULL) {
            Py_DECREF(found);
            return NULL;
        }
        PyList_SET_ITEM(found, j - i, pair);
    }
    return found;
}

/* pop `row` from each dict of `forget`, if there */
static int
forget_row(PyObject *forget, PyObject *row)
{
    Py_ssize_t n = PyTuple_GET_SIZE(forget);
    for (Py_ssize_t d = 0; d < n; d++) {
        PyObject *dict = PyTuple_GET_ITEM(forget, d);
        if (PyDict_DelItem(dict, row) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                return -1;
            PyErr_Clear();
        }
    }
    return 0;
}

static PyObject *
index_purge(JoinIndex *self, PyObject *const *args, Py_ssize_t nargs)
{
    int side;
    int64_t watermark;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "purge(side, watermark, forget)");
        return NULL;
    }
    PyObject *forget = args[2];
    if (parse_side(args[0], &side) < 0 || parse_i64(args[1], &watermark) < 0)
        return NULL;
    if (!PyTuple_CheckExact(forget)) {
        PyErr_SetString(PyExc_TypeError, "forget must be a tuple of dicts");
        return NULL;
    }
    for (Py_ssize_t d = 0; d < PyTuple_GET_SIZE(forget); d++) {
        if (!PyDict_Check(PyTuple_GET_ITEM(forget, d))) {
            PyErr_SetString(PyExc_TypeError, "forget must be a tuple of dicts");
            return NULL;
        }
    }
    PyObject *rows = PyList_New(0);
    if (rows == NULL)
        return NULL;
    Heap *heap = &self->heap[side];
    PyObject *keys = self->keys[side];
    int64_t after = self->final_after[side];
    while (heap->len > 0 && heap->items[0].final < watermark) {
        HeapItem top = heap_pop(heap);
        PyObject *key = top.key; /* owned */
        Buf *b = (Buf *)PyDict_GetItemWithError(keys, key);
        if (b == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred())
                goto fail;
            continue; /* an older entry of a key purged whole meanwhile */
        }
        /* the final prefix: times t with t + after < watermark */
        Py_ssize_t n = from_time(b, add_clamped(watermark, after == INT64_MIN ? INT64_MAX : -after));
        if (n == 0) {
            Py_DECREF(key); /* an older entry: the key's earliest record has its own */
            continue;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *row = row_of(side, &b->items[j], key);
            if (row == NULL || PyList_Append(rows, row) < 0 || forget_row(forget, row) < 0) {
                Py_XDECREF(row);
                Py_DECREF(key);
                goto fail;
            }
            Py_DECREF(row);
        }
        b->len -= n;
        memmove(b->items, &b->items[n], b->len * sizeof(Entry));
        int failed;
        if (b->len > 0)
            failed = heap_push(heap, add_clamped(b->items[0].ts, after), key);
        else
            failed = PyDict_DelItem(keys, key);
        Py_DECREF(key);
        if (failed < 0)
            goto fail;
    }
    return rows;
fail:
    Py_DECREF(rows);
    return NULL;
}

static PyMethodDef index_methods[] = {
    {"add", (PyCFunction)(void (*)(void))index_add, METH_FASTCALL, NULL},
    {"between", (PyCFunction)(void (*)(void))index_between, METH_FASTCALL, NULL},
    {"purge", (PyCFunction)(void (*)(void))index_purge, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

PyTypeObject JoinIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streamkit.state._joinindex.JoinIndex",
    .tp_basicsize = sizeof(JoinIndex),
    .tp_dealloc = (destructor)index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A stream-stream join's in-memory index (see join_index.py).",
    .tp_methods = index_methods,
    .tp_init = (initproc)index_init,
    .tp_new = PyType_GenericNew,
};

int
joinindex_ready(void)
{
    if (PyType_Ready(&BufType) < 0 || PyType_Ready(&JoinIndexType) < 0)
        return -1;
    return 0;
}
