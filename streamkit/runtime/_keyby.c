/* A `key_by` exchange's per-value call in C: the native path of `exchange.Router.bind`, whose
 * Python closure is the reference (and what runs with STREAMKIT_PURE_PYTHON=1 or without a
 * compiler).
 *
 * `KeyBy(host, route, field, key_of, encode_key, utf8_keys, raw, encode_value)`, called with a
 * value of the record being processed (`host.record`):
 *   - its key: `value[field]` when the value is a dict and `field` is not None (a missing
 *     field raises KeyError, as the Python getter does); otherwise `key_of(value)`;
 *   - the key's bytes: UTF-8 when `utf8_keys` and the key is a str (what `encode_key` does
 *     with one), else `encode_key(key)`;
 *   - the value's bytes: the record's own when `raw` (forwarded unchanged), else
 *     `encode_value(value)` (None stays None);
 *   - `route(key bytes, value bytes, host.event_ts or the record's timestamp, the record's
 *     headers)`; when it returns True (a batch filled up), `host.full = True`. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *host, *route, *field, *key_of, *encode_key, *encode_value;
    int utf8_keys, raw;
    vectorcallfunc vectorcall;
} KeyBy;

static PyObject *s_record, *s_event_ts, *s_full, *s_value, *s_timestamp, *s_headers;

static PyObject *
key_of(KeyBy *self, PyObject *value)
{
    if (self->field != Py_None && PyDict_CheckExact(value)) {
        PyObject *key = PyDict_GetItemWithError(value, self->field);
        if (key == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, self->field);
            return NULL;
        }
        Py_INCREF(key);
        return key;
    }
    return PyObject_CallOneArg(self->key_of, value);
}

static PyObject *
keyby_call(KeyBy *self, PyObject *value)
{
    PyObject *rec = NULL, *key = NULL, *bytes = NULL, *encoded = NULL, *ts = NULL;
    PyObject *headers = NULL, *full = NULL;
    PyObject *out = NULL;
    if ((rec = PyObject_GetAttr(self->host, s_record)) == NULL)
        goto done;
    if ((key = key_of(self, value)) == NULL)
        goto done;
    if (self->utf8_keys && PyUnicode_CheckExact(key))
        bytes = PyUnicode_AsUTF8String(key);
    else
        bytes = PyObject_CallOneArg(self->encode_key, key);
    if (bytes == NULL)
        goto done;
    if (self->raw)
        encoded = PyObject_GetAttr(rec, s_value);
    else if (value == Py_None)
        encoded = Py_NewRef(Py_None);
    else
        encoded = PyObject_CallOneArg(self->encode_value, value);
    if (encoded == NULL)
        goto done;
    if ((ts = PyObject_GetAttr(self->host, s_event_ts)) == NULL)
        goto done;
    if (ts == Py_None) {
        Py_DECREF(ts);
        if ((ts = PyObject_GetAttr(rec, s_timestamp)) == NULL)
            goto done;
    }
    if ((headers = PyObject_GetAttr(rec, s_headers)) == NULL)
        goto done;
    PyObject *args[4] = {bytes, encoded, ts, headers};
    if ((full = PyObject_Vectorcall(self->route, args, 4, NULL)) == NULL)
        goto done;
    int filled = PyObject_IsTrue(full);
    if (filled < 0 || (filled && PyObject_SetAttr(self->host, s_full, Py_True) < 0))
        goto done;
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(rec);
    Py_XDECREF(key);
    Py_XDECREF(bytes);
    Py_XDECREF(encoded);
    Py_XDECREF(ts);
    Py_XDECREF(headers);
    Py_XDECREF(full);
    return out;
}

static PyObject *
keyby_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "key_by(value): one positional argument");
        return NULL;
    }
    return keyby_call((KeyBy *)callable, args[0]);
}

static PyObject *
keyby_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "positional arguments only");
        return NULL;
    }
    PyObject *host, *route, *field, *key_fn, *encode_key, *encode_value;
    int utf8_keys, raw;
    if (!PyArg_ParseTuple(args, "OOOOOppO:KeyBy", &host, &route, &field, &key_fn, &encode_key,
                          &utf8_keys, &raw, &encode_value))
        return NULL;
    if (field != Py_None && !PyUnicode_Check(field)) {
        PyErr_SetString(PyExc_TypeError, "field: a str or None");
        return NULL;
    }
    KeyBy *self = (KeyBy *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->host = Py_NewRef(host);
    self->route = Py_NewRef(route);
    self->field = Py_NewRef(field);
    self->key_of = Py_NewRef(key_fn);
    self->encode_key = Py_NewRef(encode_key);
    self->encode_value = Py_NewRef(encode_value);
    self->utf8_keys = utf8_keys;
    self->raw = raw;
    self->vectorcall = keyby_vectorcall;
    return (PyObject *)self;
}

static int
keyby_traverse(KeyBy *self, visitproc visit, void *arg)
{
    Py_VISIT(self->host);
    Py_VISIT(self->route);
    Py_VISIT(self->field);
    Py_VISIT(self->key_of);
    Py_VISIT(self->encode_key);
    Py_VISIT(self->encode_value);
    return 0;
}

static int
keyby_clear(KeyBy *self)
{
    Py_CLEAR(self->host);
    Py_CLEAR(self->route);
    Py_CLEAR(self->field);
    Py_CLEAR(self->key_of);
    Py_CLEAR(self->encode_key);
    Py_CLEAR(self->encode_value);
    return 0;
}

static void
keyby_dealloc(KeyBy *self)
{
    PyObject_GC_UnTrack(self);
    keyby_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject KeyByType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamkit.runtime._keyby.KeyBy",
    .tp_doc = "KeyBy(host, route, field, key_of, encode_key, utf8_keys, raw, encode_value): "
              "key_by(value)",
    .tp_basicsize = sizeof(KeyBy),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(KeyBy, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = keyby_new,
    .tp_traverse = (traverseproc)keyby_traverse,
    .tp_clear = (inquiry)keyby_clear,
    .tp_dealloc = (destructor)keyby_dealloc,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_keyby", "A key_by exchange's per-value call in C.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__keyby(void)
{
    if ((s_record = PyUnicode_InternFromString("record")) == NULL ||
        (s_event_ts = PyUnicode_InternFromString("event_ts")) == NULL ||
        (s_full = PyUnicode_InternFromString("full")) == NULL ||
        (s_value = PyUnicode_InternFromString("value")) == NULL ||
        (s_timestamp = PyUnicode_InternFromString("timestamp")) == NULL ||
        (s_headers = PyUnicode_InternFromString("headers")) == NULL)
        return NULL;
    if (PyType_Ready(&KeyByType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "KeyBy", (PyObject *)&KeyByType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
