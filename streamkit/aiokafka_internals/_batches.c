/* The output side's per-record calls in C: the native path of `batches.py` (whose Python
 * functions are the reference, and what runs with STREAMKIT_PURE_PYTHON=1 or without a
 * compiler).
 *
 * `Adder(open, slow, cls, offsets)`: `add(tp, key, value, headers, timestamp_ms)`, the
 * collector's append to a known partition. `open` is the collector's dict of open batches
 * (destination (topic, partition) -> an `OpenBatch`, of class `cls`; `offsets`: where its
 * `append` and `count` slots are in an instance, from `_records.slot_offsets`). The common
 * case is done here: the partition's batch is open and has room, the headers are none or a
 * list; the record goes to the batch's `append` and its count goes up by one. Anything else
 * (no open batch, a full one, headers of another type) is `slow(tp, key, value, headers,
 * timestamp_ms)`, the collector's own Python `add`, with the same arguments. Returns what
 * `slow` returns, or False (no batch filled up).
 *
 * `Router(adder, tps, known, place, keyless)`: `route(key, value, timestamp_ms, headers)`
 * for records kept on their key's partition: `known` maps a key to its partition's index in
 * `tps` (the (topic, partition) tuples the batches are keyed on); a key not in it goes to
 * `place(key)`, which computes and remembers it; a None key is `keyless(value, timestamp_ms,
 * headers)`. Then `adder`'s add. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *open;  /* dict: (topic, partition) -> OpenBatch */
    PyObject *slow;  /* the collector's Python add */
    PyObject *cls;   /* OpenBatch */
    PyObject *empty; /* the headers of a record without any: an empty list, never mutated */
    Py_ssize_t append_at, count_at;
    vectorcallfunc vectorcall;
} Adder;

static PyObject *
slot(PyObject *obj, Py_ssize_t at)
{
    return *(PyObject **)((char *)obj + at);
}

static PyObject *
call_slow(Adder *self, PyObject *tp, PyObject *key, PyObject *value, PyObject *headers,
          PyObject *ts)
{
    PyObject *args[5] = {tp, key, value, headers, ts};
    return PyObject_Vectorcall(self->slow, args, 5, NULL);
}

static PyObject *
adder_add(Adder *self, PyObject *tp, PyObject *key, PyObject *value, PyObject *headers,
          PyObject *ts)
{
    PyObject *hdrs;
    if (headers == Py_None)
        hdrs = self->empty;
    else if (PyList_CheckExact(headers))
        hdrs = PyList_GET_SIZE(headers) ? headers : self->empty;
    else if (PyTuple_CheckExact(headers) && PyTuple_GET_SIZE(headers) == 0)
        hdrs = self->empty;
    else
        return call_slow(self, tp, key, value, headers, ts);
    PyObject *batch = PyDict_GetItemWithError(self->open, tp); /* borrowed */
    if (batch == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return call_slow(self, tp, key, value, headers, ts);
    }
    if ((PyObject *)Py_TYPE(batch) != self->cls)
        return call_slow(self, tp, key, value, headers, ts);
    PyObject *append = slot(batch, self->append_at), *count = slot(batch, self->count_at);
    if (append == NULL || count == NULL || !PyLong_CheckExact(count))
        return call_slow(self, tp, key, value, headers, ts);
    Py_INCREF(batch); /* the append may run Python code that drops it from `open` */
    Py_INCREF(append);
    Py_INCREF(count);
    PyObject *args[5] = {count, ts, key, value, hdrs};
    PyObject *added = PyObject_Vectorcall(append, args, 5, NULL);
    Py_DECREF(append);
    if (added == NULL) {
        Py_DECREF(count);
        Py_DECREF(batch);
        return NULL;
    }
    int full = added == Py_None;
    Py_DECREF(added);
    if (full) { /* the slow path closes it, starts another and adds the record there */
        Py_DECREF(count);
        Py_DECREF(batch);
        return call_slow(self, tp, key, value, headers, ts);
    }
    Py_ssize_t n = PyLong_AsSsize_t(count);
    Py_DECREF(count);
    PyObject *next = n == -1 && PyErr_Occurred() ? NULL : PyLong_FromSsize_t(n + 1);
    if (next == NULL) {
        Py_DECREF(batch);
        return NULL;
    }
    PyObject **at = (PyObject **)((char *)batch + self->count_at);
    PyObject *old = *at;
    *at = next;
    Py_XDECREF(old);
    Py_DECREF(batch);
    Py_RETURN_FALSE;
}

static PyObject *
adder_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n != 5 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError,
                        "add(tp, key, value, headers, timestamp_ms): five positional arguments");
        return NULL;
    }
    return adder_add((Adder *)callable, args[0], args[1], args[2], args[3], args[4]);
}

static int
offset_of(PyObject *offsets, Py_ssize_t i, Py_ssize_t *out)
{
    *out = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, i));
    if (*out == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

static PyObject *
adder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "positional arguments only");
        return NULL;
    }
    PyObject *open, *slow, *cls, *offsets;
    if (!PyArg_ParseTuple(args, "O!OO!O!:Adder", &PyDict_Type, &open, &slow, &PyType_Type, &cls,
                          &PyTuple_Type, &offsets))
        return NULL;
    if (PyTuple_GET_SIZE(offsets) != 2) {
        PyErr_SetString(PyExc_ValueError, "two slot offsets expected (append, count)");
        return NULL;
    }
    Py_ssize_t append_at, count_at;
    if (offset_of(offsets, 0, &append_at) < 0 || offset_of(offsets, 1, &count_at) < 0)
        return NULL;
    Py_ssize_t size = ((PyTypeObject *)cls)->tp_basicsize;
    if (append_at < (Py_ssize_t)sizeof(PyObject) || count_at < (Py_ssize_t)sizeof(PyObject) ||
        append_at > size - (Py_ssize_t)sizeof(PyObject *) ||
        count_at > size - (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_SetString(PyExc_ValueError, "a slot offset outside the instance");
        return NULL;
    }
    Adder *self = (Adder *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->empty = PyList_New(0);
    if (self->empty == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(open);
    Py_INCREF(slow);
    Py_INCREF(cls);
    self->open = open;
    self->slow = slow;
    self->cls = cls;
    self->append_at = append_at;
    self->count_at = count_at;
    self->vectorcall = adder_vectorcall;
    return (PyObject *)self;
}

static int
adder_traverse(Adder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->open);
    Py_VISIT(self->slow);
    Py_VISIT(self->cls);
    Py_VISIT(self->empty);
    return 0;
}

static int
adder_clear(Adder *self)
{
    Py_CLEAR(self->open);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->cls);
    Py_CLEAR(self->empty);
    return 0;
}

static void
adder_dealloc(Adder *self)
{
    PyObject_GC_UnTrack(self);
    adder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject AdderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamkit.aiokafka_internals._batches.Adder",
    .tp_doc = "Adder(open, slow, cls, offsets): add(tp, key, value, headers, timestamp_ms)",
    .tp_basicsize = sizeof(Adder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Adder, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = adder_new,
    .tp_traverse = (traverseproc)adder_traverse,
    .tp_clear = (inquiry)adder_clear,
    .tp_dealloc = (destructor)adder_dealloc,
};

typedef struct {
    PyObject_HEAD
    Adder *adder;
    PyObject *tps;     /* list of (topic, partition) */
    PyObject *known;   /* dict: key -> index in tps */
    PyObject *place;   /* key -> index, remembered in known */
    PyObject *keyless; /* (value, timestamp_ms, headers) -> bool */
    vectorcallfunc vectorcall;
} Router;

static PyObject *
router_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Router *self = (Router *)callable;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n < 3 || n > 4 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError,
                        "route(key, value, timestamp_ms, headers=None): positional arguments");
        return NULL;
    }
    PyObject *key = args[0], *value = args[1], *ts = args[2];
    PyObject *headers = n == 4 ? args[3] : Py_None;
    if (key == Py_None) {
        PyObject *rest[3] = {value, ts, headers};
        return PyObject_Vectorcall(self->keyless, rest, 3, NULL);
    }
    PyObject *index = PyDict_GetItemWithError(self->known, key); /* borrowed */
    if (index != NULL)
        Py_INCREF(index);
    else if (PyErr_Occurred())
        return NULL;
    else if ((index = PyObject_CallOneArg(self->place, key)) == NULL)
        return NULL;
    Py_ssize_t i = PyLong_AsSsize_t(index);
    Py_DECREF(index);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i >= PyList_GET_SIZE(self->tps)) {
        PyErr_Format(PyExc_IndexError, "partition %zd of %zd", i, PyList_GET_SIZE(self->tps));
        return NULL;
    }
    PyObject *tp = PyList_GET_ITEM(self->tps, i);
    Py_INCREF(tp);
    PyObject *out = adder_add(self->adder, tp, key, value, headers, ts);
    Py_DECREF(tp);
    return out;
}

static PyObject *
router_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "positional arguments only");
        return NULL;
    }
    PyObject *adder, *tps, *known, *place, *keyless;
    if (!PyArg_ParseTuple(args, "O!O!O!OO:Router", &AdderType, &adder, &PyList_Type, &tps,
                          &PyDict_Type, &known, &place, &keyless))
        return NULL;
    Router *self = (Router *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(adder);
    Py_INCREF(tps);
    Py_INCREF(known);
    Py_INCREF(place);
    Py_INCREF(keyless);
    self->adder = (Adder *)adder;
    self->tps = tps;
    self->known = known;
    self->place = place;
    self->keyless = keyless;
    self->vectorcall = router_vectorcall;
    return (PyObject *)self;
}

static int
router_traverse(Router *self, visitproc visit, void *arg)
{
    Py_VISIT(self->adder);
    Py_VISIT(self->tps);
    Py_VISIT(self->known);
    Py_VISIT(self->place);
    Py_VISIT(self->keyless);
    return 0;
}

static int
router_clear(Router *self)
{
    Py_CLEAR(self->adder);
    Py_CLEAR(self->tps);
    Py_CLEAR(self->known);
    Py_CLEAR(self->place);
    Py_CLEAR(self->keyless);
    return 0;
}

static void
router_dealloc(Router *self)
{
    PyObject_GC_UnTrack(self);
    router_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RouterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamkit.aiokafka_internals._batches.Router",
    .tp_doc = "Router(adder, tps, known, place, keyless): route(key, value, timestamp_ms, "
              "headers=None)",
    .tp_basicsize = sizeof(Router),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Router, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = router_new,
    .tp_traverse = (traverseproc)router_traverse,
    .tp_clear = (inquiry)router_clear,
    .tp_dealloc = (destructor)router_dealloc,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_batches", "The collector's per-record calls in C.", -1, NULL,
};

PyMODINIT_FUNC
PyInit__batches(void)
{
    if (PyType_Ready(&AdderType) < 0 || PyType_Ready(&RouterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Adder", (PyObject *)&AdderType) < 0 ||
        PyModule_AddObjectRef(m, "Router", (PyObject *)&RouterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
