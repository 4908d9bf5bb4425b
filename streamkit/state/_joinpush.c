/* A stream-stream join's push in C: the native path of `stream_join.JoinPartition.push`,
 * whose Python method is the reference (and what runs with STREAMKIT_PURE_PYTHON=1 or
 * without a compiler). It makes the same calls in the same order.
 *
 * `JoinPush(part)` over a `JoinPartition` whose index is the C one: it takes the partition's
 * constants once (its index, its rows' cache, get and set, its codecs, the spec's bounds per
 * side) and, per call, reads and writes the partition's attributes the Python method does
 * (`watermark`, `_seq`, `newest_final`, `buffered`, `emit`, `late`).
 *
 *   push(side, key, ts, value, offset, raw=None)
 *     1. late (the watermark passed ts + grace): `late(side, ts, watermark)`, nothing else;
 *     2. each buffered record of the other side and key with a time in the side's interval
 *        around ts, in time order: its row read (the cache, else `rows.get`), its value
 *        decoded with its side's codec, its matched flag set (`rows.set`) when its side keeps
 *        unmatched records, and `emit(key, max(ts, its time), left, right, offset)`;
 *     3. already final (a one-sided interval): an unmatched record of a side that keeps them
 *        is emitted, nothing is buffered;
 *     4. else the record's row is written (`rows.set`: matched flag, offset, then `raw` or
 *        the value encoded with its side's codec), indexed, and the partition's `_seq`,
 *        `newest_final` and `buffered` move on. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_joinindex.h"
#include "_joinpush.h"

#define HEAD 9 /* a stored row: matched (1 byte), source offset (8), then the value's bytes */

typedef struct {
    PyObject_HEAD
    PyObject *part;   /* the JoinPartition */
    JoinIndex *index; /* its index */
    PyObject *cache, *get, *set;
    PyObject *decode[2], *encode[2];
    int64_t grace, lo[2], hi[2], final_after[2];
    int keeps[2];
    vectorcallfunc vectorcall;
} JoinPush;

static PyObject *s_watermark, *s_seq, *s_newest_final, *s_buffered, *s_emit, *s_late;
static PyObject *s_index, *s_rows, *s_cache, *s_get, *s_set, *s_codecs, *s_decode, *s_encode;
static PyObject *s_grace, *s_lo, *s_hi, *s_final_after, *s_keeps;

static int
get_i64(PyObject *obj, PyObject *name, int64_t *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    long long x = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = (int64_t)x;
    return 0;
}

static int
set_i64(PyObject *obj, PyObject *name, int64_t value)
{
    PyObject *v = PyLong_FromLongLong(value);
    if (v == NULL)
        return -1;
    int failed = PyObject_SetAttr(obj, name, v);
    Py_DECREF(v);
    return failed;
}

/* item i of the pair `obj.name` */
static PyObject *
pair_item(PyObject *obj, PyObject *name, Py_ssize_t i)
{
    PyObject *pair = PyObject_GetAttr(obj, name);
    if (pair == NULL)
        return NULL;
    PyObject *item = PySequence_GetItem(pair, i);
    Py_DECREF(pair);
    return item;
}

static int
pair_i64(PyObject *obj, PyObject *name, int64_t out[2])
{
    for (int i = 0; i < 2; i++) {
        PyObject *item = pair_item(obj, name, i);
        if (item == NULL)
            return -1;
        long long x = PyLong_AsLongLong(item);
        Py_DECREF(item);
        if (x == -1 && PyErr_Occurred())
            return -1;
        out[i] = (int64_t)x;
    }
    return 0;
}

static int
push_init(JoinPush *self, PyObject *args, PyObject *kwds)
{
    PyObject *part, *rows = NULL, *codecs = NULL, *index = NULL;
    static char *kwlist[] = {"part", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &part))
        return -1;
    int ok = -1;
    if ((index = PyObject_GetAttr(part, s_index)) == NULL)
        goto done;
    if (!PyObject_TypeCheck(index, &JoinIndexType)) {
        PyErr_SetString(PyExc_TypeError, "JoinPush needs a partition whose index is the C one");
        goto done;
    }
    if ((rows = PyObject_GetAttr(part, s_rows)) == NULL ||
        (codecs = PyObject_GetAttr(part, s_codecs)) == NULL)
        goto done;
    Py_XSETREF(self->part, Py_NewRef(part));
    Py_XSETREF(self->index, (JoinIndex *)Py_NewRef(index));
    Py_XSETREF(self->cache, PyObject_GetAttr(rows, s_cache));
    Py_XSETREF(self->get, PyObject_GetAttr(rows, s_get));
    Py_XSETREF(self->set, PyObject_GetAttr(rows, s_set));
    if (self->cache == NULL || self->get == NULL || self->set == NULL)
        goto done;
    if (!PyDict_CheckExact(self->cache)) {
        PyErr_SetString(PyExc_TypeError, "a join's rows cache must be a dict");
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        PyObject *codec = PySequence_GetItem(codecs, i);
        if (codec == NULL)
            goto done;
        Py_XSETREF(self->decode[i], PyObject_GetAttr(codec, s_decode));
        Py_XSETREF(self->encode[i], PyObject_GetAttr(codec, s_encode));
        Py_DECREF(codec);
        if (self->decode[i] == NULL || self->encode[i] == NULL)
            goto done;
    }
    int64_t keeps[2];
    if (get_i64(part, s_grace, &self->grace) < 0 || pair_i64(part, s_lo, self->lo) < 0 ||
        pair_i64(part, s_hi, self->hi) < 0 || pair_i64(part, s_final_after, self->final_after) < 0 ||
        pair_i64(part, s_keeps, keeps) < 0)
        goto done;
    self->keeps[0] = keeps[0] != 0;
    self->keeps[1] = keeps[1] != 0;
    ok = 0;
done:
    Py_XDECREF(index);
    Py_XDECREF(rows);
    Py_XDECREF(codecs);
    return ok;
}

static int
push_traverse(JoinPush *self, visitproc visit, void *arg)
{
    Py_VISIT(self->part);
    Py_VISIT(self->index);
    Py_VISIT(self->cache);
    Py_VISIT(self->get);
    Py_VISIT(self->set);
    for (int i = 0; i < 2; i++) {
        Py_VISIT(self->decode[i]);
        Py_VISIT(self->encode[i]);
    }
    return 0;
}

static int
push_clear(JoinPush *self)
{
    Py_CLEAR(self->part);
    Py_CLEAR(self->index);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->get);
    Py_CLEAR(self->set);
    for (int i = 0; i < 2; i++) {
        Py_CLEAR(self->decode[i]);
        Py_CLEAR(self->encode[i]);
    }
    return 0;
}

static void
push_dealloc(JoinPush *self)
{
    PyObject_GC_UnTrack(self);
    push_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* the bytes of `stored` from `at` on */
static PyObject *
tail_of(PyObject *stored, Py_ssize_t at)
{
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(stored) + at, PyBytes_GET_SIZE(stored) - at);
}

/* emit(key, ts, left, right, offset), the new record's value on its side */
static int
emit(PyObject *fn, int side, PyObject *key, int64_t ts, PyObject *mine, PyObject *theirs,
     PyObject *offset)
{
    PyObject *at = PyLong_FromLongLong(ts);
    if (at == NULL)
        return -1;
    PyObject *args[5] = {key, at, side == 0 ? mine : theirs, side == 0 ? theirs : mine, offset};
    PyObject *r = PyObject_Vectorcall(fn, args, 5, NULL);
    Py_DECREF(at);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* step 2: the partners; 1 if there were any, -1 on error */
static int
match(JoinPush *self, int side, PyObject *key, int64_t ts, PyObject *value, PyObject *offset)
{
    int other = 1 - side;
    Buf *b = (Buf *)PyDict_GetItemWithError(self->index->keys[other], key);
    if (b == NULL)
        return PyErr_Occurred() ? -1 : 0;
    int64_t lo = add_clamped(ts, self->lo[side]), hi = add_clamped(ts, self->hi[side]);
    Py_ssize_t i = from_time(b, lo), end = i;
    while (end < b->len && b->items[end].ts <= hi)
        end++;
    if (end == i)
        return 0;
    /* a copy: the calls below run Python code */
    Py_ssize_t n = end - i;
    Entry *found = PyMem_Malloc(n * sizeof(Entry));
    if (found == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(found, &b->items[i], n * sizeof(Entry));
    int result = -1;
    PyObject *fn = PyObject_GetAttr(self->part, s_emit);
    if (fn == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *row = row_of(other, &found[j], key), *stored = NULL, *partner = NULL;
        PyObject *tail = NULL, *flagged = NULL;
        int failed = 1;
        if (row == NULL)
            goto next;
        stored = PyDict_GetItemWithError(self->cache, row);
        if (stored != NULL && PyObject_IsTrue(stored) == 1)
            Py_INCREF(stored);
        else if (PyErr_Occurred() || (stored = PyObject_CallOneArg(self->get, row)) == NULL)
            goto next;
        if (!PyBytes_Check(stored) || PyBytes_GET_SIZE(stored) < HEAD) {
            PyErr_SetString(PyExc_ValueError, "a join row is not a stored record");
            goto next;
        }
        if ((tail = tail_of(stored, HEAD)) == NULL ||
            (partner = PyObject_CallOneArg(self->decode[other], tail)) == NULL)
            goto next;
        if (self->keeps[other] && PyBytes_AS_STRING(stored)[0] == 0) {
            if ((flagged = PyBytes_FromStringAndSize(PyBytes_AS_STRING(stored), PyBytes_GET_SIZE(stored))) == NULL)
                goto next;
            PyBytes_AS_STRING(flagged)[0] = 1;
            PyObject *args[2] = {row, flagged};
            PyObject *r = PyObject_Vectorcall(self->set, args, 2, NULL);
            if (r == NULL)
                goto next;
            Py_DECREF(r);
        }
        if (emit(fn, side, key, ts > found[j].ts ? ts : found[j].ts, value, partner, offset) < 0)
            goto next;
        failed = 0;
    next:
        Py_XDECREF(row);
        Py_XDECREF(stored);
        Py_XDECREF(tail);
        Py_XDECREF(partner);
        Py_XDECREF(flagged);
        if (failed)
            goto done;
    }
    result = 1;
done:
    Py_XDECREF(fn);
    PyMem_Free(found);
    return result;
}

static PyObject *
push_call(JoinPush *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 && nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "push(side, key, ts, value, offset, raw=None)");
        return NULL;
    }
    PyObject *key = args[1], *value = args[3], *offset = args[4];
    PyObject *raw = nargs == 6 ? args[5] : Py_None;
    int side;
    if (parse_side(args[0], &side) < 0)
        return NULL;
    if (check_key(key) < 0)
        return NULL;
    long long t = PyLong_AsLongLong(args[2]), off = PyLong_AsLongLong(offset);
    if ((t == -1 || off == -1) && PyErr_Occurred())
        return NULL;
    int64_t ts = (int64_t)t, watermark, seq, newest, buffered;
    PyObject *part = self->part;
    if (get_i64(part, s_watermark, &watermark) < 0)
        return NULL;
    if (watermark > add_clamped(ts, self->grace)) { /* 1. late */
        PyObject *late = PyObject_GetAttr(part, s_late);
        if (late == NULL)
            return NULL;
        PyObject *r = PyObject_CallFunction(late, "iLL", side, (long long)ts, (long long)watermark);
        Py_DECREF(late);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    int matched = match(self, side, key, ts, value, offset); /* 2. the partners */
    if (matched < 0)
        return NULL;
    int64_t final_after = add_clamped(ts, self->final_after[side]);
    if (watermark > final_after) { /* 3. already final */
        if (!matched && self->keeps[side]) {
            PyObject *fn = PyObject_GetAttr(part, s_emit);
            if (fn == NULL)
                return NULL;
            int failed = emit(fn, side, key, ts, value, Py_None, offset);
            Py_DECREF(fn);
            if (failed < 0)
                return NULL;
        }
        Py_RETURN_NONE;
    }
    /* 4. buffered */
    if (get_i64(part, s_seq, &seq) < 0 || set_i64(part, s_seq, seq + 1) < 0)
        return NULL;
    PyObject *body = raw == Py_None ? PyObject_CallOneArg(self->encode[side], value) : Py_NewRef(raw);
    if (body == NULL)
        return NULL;
    if (!PyBytes_Check(body)) {
        Py_DECREF(body);
        PyErr_SetString(PyExc_TypeError, "a join side's codec must encode to bytes");
        return NULL;
    }
    Entry e = {ts, seq};
    PyObject *row = row_of(side, &e, key);
    PyObject *stored = PyBytes_FromStringAndSize(NULL, HEAD + PyBytes_GET_SIZE(body));
    PyObject *r = NULL;
    if (row != NULL && stored != NULL) {
        char *at = PyBytes_AS_STRING(stored);
        at[0] = (char)matched;
        put_be64(at + 1, (int64_t)off);
        memcpy(at + HEAD, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body));
        PyObject *call[2] = {row, stored};
        r = PyObject_Vectorcall(self->set, call, 2, NULL);
    }
    Py_DECREF(body);
    Py_XDECREF(row);
    Py_XDECREF(stored);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    if (index_insert(self->index, side, key, ts, seq) < 0)
        return NULL;
    if (get_i64(part, s_newest_final, &newest) < 0)
        return NULL;
    if (final_after > newest && set_i64(part, s_newest_final, final_after) < 0)
        return NULL;
    if (get_i64(part, s_buffered, &buffered) < 0 || set_i64(part, s_buffered, buffered + 1) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
push_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "push takes positional arguments only");
        return NULL;
    }
    return push_call((JoinPush *)self, args, PyVectorcall_NARGS(nargsf));
}

static PyObject *
push_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

static PyObject *
push_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    JoinPush *self = (JoinPush *)PyType_GenericNew(type, args, kwds);
    if (self != NULL)
        self->vectorcall = push_vectorcall;
    return (PyObject *)self;
}

PyTypeObject JoinPushType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "streamkit.state._joinindex.JoinPush",
    .tp_basicsize = sizeof(JoinPush),
    .tp_dealloc = (destructor)push_dealloc,
    .tp_traverse = (traverseproc)push_traverse,
    .tp_clear = (inquiry)push_clear,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A stream-stream join's push (see stream_join.JoinPartition.push).",
    .tp_vectorcall_offset = offsetof(JoinPush, vectorcall),
    .tp_call = push_tp_call,
    .tp_init = (initproc)push_init,
    .tp_new = push_new,
};

int
joinpush_ready(void)
{
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    INTERN(s_watermark, "watermark");
    INTERN(s_seq, "_seq");
    INTERN(s_newest_final, "newest_final");
    INTERN(s_buffered, "buffered");
    INTERN(s_emit, "emit");
    INTERN(s_late, "late");
    INTERN(s_index, "index");
    INTERN(s_rows, "rows");
    INTERN(s_cache, "cache");
    INTERN(s_get, "get");
    INTERN(s_set, "set");
    INTERN(s_codecs, "codecs");
    INTERN(s_decode, "decode");
    INTERN(s_encode, "encode");
    INTERN(s_grace, "_grace");
    INTERN(s_lo, "_lo");
    INTERN(s_hi, "_hi");
    INTERN(s_final_after, "_final_after");
    INTERN(s_keeps, "_keeps");
#undef INTERN
    return PyType_Ready(&JoinPushType);
}
