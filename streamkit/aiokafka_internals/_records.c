/* The records of one uncompressed Kafka record batch (magic 2), read in one pass: the native
 * path of `records.py` (which keeps aiokafka's reader as the reference, for compressed and
 * older batches, and with STREAMKIT_PURE_PYTHON=1).
 *
 * A batch: a 61-byte header (base offset, length, leader epoch, magic, CRC, attributes, last
 * offset delta, base and max timestamps, producer id and epoch, base sequence, record count),
 * then its records, each: length, attributes, timestamp delta, offset delta, key, value and
 * headers, the integers as zigzag varints (KIP-98's format, Kafka's DefaultRecord).
 *
 * `input_records(batch, start, out, cls, topic, partition, offsets)` appends to `out` one `cls`
 * instance per record at or after offset `start`, its eight slots set directly (`offsets`:
 * where they are in the instance, `slot_offsets(cls, names)` once, from the class's member
 * descriptors).
 * `rows(batch, start, out, times)` appends (key, value) per record, and its timestamp to
 * `times` unless None. Both check every length against the batch and raise ValueError on a
 * malformed one. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define HEADER_SIZE 61
#define LOG_APPEND_TIME 0x08
#define COMPRESSION 0x07

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Cursor;

static int
fail(const char *what)
{
    PyErr_Format(PyExc_ValueError, "malformed record batch: %s", what);
    return -1;
}

static int
varlong(Cursor *c, int64_t *out)
{
    uint64_t value = 0;
    int shift = 0;
    while (c->p < c->end && shift < 64) {
        unsigned char b = *c->p++;
        value |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(value >> 1) ^ -(int64_t)(value & 1);
            return 0;
        }
        shift += 7;
    }
    return fail("a varint runs past the batch");
}

static int64_t
be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

static int32_t
be32(const unsigned char *p)
{
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     (uint32_t)p[3]);
}

typedef struct {
    int64_t base_offset;
    int64_t first_timestamp;
    int64_t max_timestamp;
    int log_append;
    int32_t count;
    Cursor records;
} Batch;

static int
open_batch(Py_buffer *view, Batch *batch)
{
    const unsigned char *p = view->buf;
    if (view->len < HEADER_SIZE)
        return fail("shorter than its header");
    int32_t length = be32(p + 8);
    if (length < HEADER_SIZE - 12 || (Py_ssize_t)length + 12 > view->len)
        return fail("its length is not its size");
    if (p[16] != 2)
        return fail("not magic 2");
    int attributes = (p[21] << 8) | p[22];
    if (attributes & COMPRESSION)
        return fail("compressed (the reference reader takes those)");
    batch->base_offset = be64(p);
    batch->log_append = (attributes & LOG_APPEND_TIME) != 0;
    batch->first_timestamp = be64(p + 27);
    batch->max_timestamp = be64(p + 35);
    batch->count = be32(p + 57);
    batch->records.p = p + HEADER_SIZE;
    batch->records.end = p + 12 + length;
    return 0;
}

typedef struct {
    int64_t offset;
    int64_t timestamp;
    const unsigned char *key;
    int64_t key_len; /* -1: null */
    const unsigned char *value;
    int64_t value_len;
    int64_t headers; /* how many */
    Cursor header_data;
    const unsigned char *end;
} Record;

static int
bytes_field(Cursor *c, const unsigned char **at, int64_t *len)
{
    if (varlong(c, len) < 0)
        return -1;
    if (*len < -1 || *len > c->end - c->p)
        return fail("a key, value or header runs past its record");
    *at = c->p;
    if (*len > 0)
        c->p += *len;
    return 0;
}

/* One record at `c` (moved past it); its headers are left at `header_data` to read. */
static int
next_record(Cursor *c, const Batch *batch, Record *rec)
{
    int64_t length, ts_delta, offset_delta;
    if (varlong(c, &length) < 0)
        return -1;
    if (length < 1 || length > c->end - c->p)
        return fail("a record's length is not its size");
    Cursor r = {c->p, c->p + length};
    c->p += length;
    r.p++; /* its attributes: unused */
    if (varlong(&r, &ts_delta) < 0 || varlong(&r, &offset_delta) < 0)
        return -1;
    if (bytes_field(&r, &rec->key, &rec->key_len) < 0 ||
        bytes_field(&r, &rec->value, &rec->value_len) < 0 || varlong(&r, &rec->headers) < 0)
        return -1;
    if (rec->headers < 0)
        return fail("a negative header count");
    /* (wrapping, not undefined, on a damaged batch's deltas) */
    rec->offset = (int64_t)((uint64_t)batch->base_offset + (uint64_t)offset_delta);
    rec->timestamp = batch->log_append
                         ? batch->max_timestamp
                         : (int64_t)((uint64_t)batch->first_timestamp + (uint64_t)ts_delta);
    rec->header_data = r;
    rec->end = r.end;
    return 0;
}

static PyObject *
bytes_or_none(const unsigned char *at, int64_t len)
{
    if (len < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)at, (Py_ssize_t)len);
}

/* (key, value): a new pair that takes over `key` (NULL: its error is already set). */
static PyObject *
pair_with(PyObject *key, const unsigned char *v, int64_t vlen)
{
    if (key == NULL)
        return NULL;
    PyObject *value = bytes_or_none(v, vlen);
    PyObject *pair = value == NULL ? NULL : PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(key);
        Py_XDECREF(value);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, key);
    PyTuple_SET_ITEM(pair, 1, value);
    return pair;
}

static PyObject *
headers_of(Record *rec)
{
    if (rec->headers == 0)
        return PyTuple_New(0);
    if (rec->headers > rec->header_data.end - rec->header_data.p) {
        fail("more headers than bytes");
        return NULL;
    }
    PyObject *tuple = PyTuple_New((Py_ssize_t)rec->headers);
    if (tuple == NULL)
        return NULL;
    for (int64_t i = 0; i < rec->headers; i++) {
        const unsigned char *k, *v;
        int64_t klen, vlen;
        if (bytes_field(&rec->header_data, &k, &klen) < 0 ||
            bytes_field(&rec->header_data, &v, &vlen) < 0)
            goto error;
        if (klen < 0) {
            fail("a header without a key");
            goto error;
        }
        PyObject *pair =
            pair_with(PyUnicode_DecodeUTF8((const char *)k, (Py_ssize_t)klen, "strict"), v, vlen);
        if (pair == NULL)
            goto error;
        PyTuple_SET_ITEM(tuple, (Py_ssize_t)i, pair);
    }
    return tuple;
error:
    Py_DECREF(tuple);
    return NULL;
}

#define SLOTS 8 /* topic, partition, offset, timestamp, timestamp_type, key, value, headers */

static PyObject *
input_records(PyObject *module, PyObject *args)
{
    Py_buffer view;
    long long start;
    PyObject *out, *cls, *topic, *partition, *offsets;
    if (!PyArg_ParseTuple(args, "y*LO!O!UO!O!", &view, &start, &PyList_Type, &out, &PyType_Type,
                          &cls, &topic, &PyLong_Type, &partition, &PyTuple_Type, &offsets))
        return NULL;
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t slot[SLOTS];
    Batch batch;
    PyObject *kind = NULL;
    if (PyTuple_GET_SIZE(offsets) != SLOTS) {
        PyErr_SetString(PyExc_ValueError, "eight slot offsets expected");
        goto error;
    }
    for (int i = 0; i < SLOTS; i++) {
        slot[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, i));
        if (slot[i] < (Py_ssize_t)sizeof(PyObject) ||
            slot[i] + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a slot offset outside the instance");
            goto error;
        }
    }
    if (open_batch(&view, &batch) < 0)
        goto error;
    kind = PyLong_FromLong(batch.log_append ? 1 : 0);
    if (kind == NULL)
        goto error;
    Cursor c = batch.records;
    for (int32_t n = 0; n < batch.count; n++) {
        Record rec;
        if (next_record(&c, &batch, &rec) < 0)
            goto error;
        if (rec.offset < start)
            continue;
        PyObject *fields[SLOTS] = {NULL};
        fields[0] = Py_NewRef(topic);
        fields[1] = Py_NewRef(partition);
        fields[2] = PyLong_FromLongLong(rec.offset);
        fields[3] = PyLong_FromLongLong(rec.timestamp);
        fields[4] = Py_NewRef(kind);
        fields[5] = bytes_or_none(rec.key, rec.key_len);
        fields[6] = bytes_or_none(rec.value, rec.value_len);
        fields[7] = headers_of(&rec);
        PyObject *obj = NULL;
        int ok = 1;
        for (int i = 0; i < SLOTS; i++)
            ok = ok && fields[i] != NULL;
        if (ok)
            obj = type->tp_alloc(type, 0);
        if (obj == NULL) {
            for (int i = 0; i < SLOTS; i++)
                Py_XDECREF(fields[i]);
            goto error;
        }
        for (int i = 0; i < SLOTS; i++) {
            PyObject **at = (PyObject **)((char *)obj + slot[i]);
            Py_XSETREF(*at, fields[i]);
        }
        int appended = PyList_Append(out, obj);
        Py_DECREF(obj);
        if (appended < 0)
            goto error;
    }
    Py_DECREF(kind);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    Py_XDECREF(kind);
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *
rows(PyObject *module, PyObject *args)
{
    Py_buffer view;
    long long start;
    PyObject *out, *times;
    if (!PyArg_ParseTuple(args, "y*LO!O", &view, &start, &PyList_Type, &out, &times))
        return NULL;
    if (times != Py_None && !PyList_Check(times)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "times: a list or None");
        return NULL;
    }
    Batch batch;
    if (open_batch(&view, &batch) < 0)
        goto error;
    Cursor c = batch.records;
    for (int32_t n = 0; n < batch.count; n++) {
        Record rec;
        if (next_record(&c, &batch, &rec) < 0)
            goto error;
        if (rec.offset < start)
            continue;
        PyObject *pair = pair_with(bytes_or_none(rec.key, rec.key_len), rec.value, rec.value_len);
        if (pair == NULL)
            goto error;
        int appended = PyList_Append(out, pair);
        Py_DECREF(pair);
        if (appended < 0)
            goto error;
        if (times != Py_None) {
            PyObject *ts = PyLong_FromLongLong(rec.timestamp);
            if (ts == NULL)
                goto error;
            appended = PyList_Append(times, ts);
            Py_DECREF(ts);
            if (appended < 0)
                goto error;
        }
    }
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *
slot_offsets(PyObject *module, PyObject *args)
{
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    PyObject *out = PyTuple_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *descr = PyObject_GetAttr(cls, PyTuple_GET_ITEM(names, i));
        if (descr == NULL)
            goto error;
        int member = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                     ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
        Py_ssize_t offset = member ? ((PyMemberDescrObject *)descr)->d_member->offset : 0;
        Py_DECREF(descr);
        if (!member) {
            PyErr_Format(PyExc_TypeError, "%R is not a slot of %R", PyTuple_GET_ITEM(names, i),
                         cls);
            goto error;
        }
        PyObject *at = PyLong_FromSsize_t(offset);
        if (at == NULL)
            goto error;
        PyTuple_SET_ITEM(out, i, at);
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"slot_offsets", slot_offsets, METH_VARARGS,
     "slot_offsets(cls, names): where each named slot is in an instance of cls"},
    {"input_records", input_records, METH_VARARGS,
     "input_records(batch, start, out, cls, topic, partition, offsets): append one cls per "
     "record at or after start"},
    {"rows", rows, METH_VARARGS,
     "rows(batch, start, out, times): append (key, value) per record at or after start"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records", "Kafka record batches (magic 2) read in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__records(void)
{
    return PyModule_Create(&module);
}
