/* A table's per-access calls in C: `t[k]`, `t[k] = v` and a closed window's rows forgotten.
 * Their Python code is the reference (`table_access.py`, `Table._getitem` / `_setitem` /
 * `_delitem`), what runs with STREAMKIT_PURE_PYTHON=1 or without a compiler.
 *
 * `TableAccess`, the base class of `Table`: its `name`, `ttl` and `source` are stored here
 * (plain attributes to Python). When `Table` is built on it, it leaves `__getitem__`,
 * `__setitem__` and `__delitem__` to these slots:
 *   - `t[k]`: the task's partition (`CURRENT_TASK`'s `tables[name]`), a live value in its
 *     cache: the partition's `hits` + 1, the key marked dirty when the value can change in
 *     place (its type not in the immutable set) and the table is not a source's; the value.
 *   - `t[k] = v`: a key already in the cache of the task's partition: `dirty[k]` and
 *     `cache[k]` set to v.
 *   - everything else (a TTL, a source table, no task, a key not cached, a deleted one, `del
 *     t[k]`) is the Python method's (`_getitem`, `_setitem`, `_delitem`), called as it is.
 *
 * `forget_rows(cache, dirty, start, keys)`: for each key, the row `(start, key)` popped from
 * both dicts (what `TablePartition.forget_all` does when nothing is being flushed).
 *
 * `configure(current_task, missing, deleted, immutable)`: the context variable, the two
 * markers of the cache and the frozenset of immutable types, once at import. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>

typedef struct {
    PyObject_HEAD
    PyObject *name, *ttl, *source;
} TableAccess;

static PyObject *current_task, *missing, *deleted, *immutable, *one;
static PyObject *s_tables, *s_cache, *s_dirty, *s_hits, *s_getitem, *s_setitem, *s_delitem;

/* The cache dict of the running task's partition of this table (a new reference), or NULL:
 * with an error set, an error; without, none (the caller's slow path says why). */
static PyObject *
task_part(TableAccess *self, PyObject **part_out)
{
    PyObject *scope = NULL, *tables = NULL, *cache = NULL;
    *part_out = NULL;
    if (current_task == NULL || PyContextVar_Get(current_task, NULL, &scope) < 0)
        return NULL;
    if (scope == NULL)
        return NULL;
    tables = PyObject_GetAttr(scope, s_tables);
    Py_DECREF(scope);
    if (tables == NULL)
        return NULL;
    if (PyDict_CheckExact(tables) && self->name != NULL) {
        PyObject *part = PyDict_GetItemWithError(tables, self->name); /* borrowed */
        if (part != NULL) {
            cache = PyObject_GetAttr(part, s_cache);
            if (cache != NULL && !PyDict_CheckExact(cache))
                Py_CLEAR(cache);
            else if (cache != NULL)
                *part_out = Py_NewRef(part);
        }
    }
    Py_DECREF(tables);
    return cache;
}

static PyObject *
access_subscript(TableAccess *self, PyObject *key)
{
    PyObject *part = NULL, *cache = NULL, *out = NULL;
    if (self->ttl != Py_None || self->source == NULL)
        goto slow;
    if ((cache = task_part(self, &part)) == NULL) {
        if (PyErr_Occurred())
            return NULL;
        goto slow;
    }
    PyObject *value = PyDict_GetItemWithError(cache, key); /* borrowed */
    if (value == NULL) {
        if (PyErr_Occurred())
            goto done;
        goto slow;
    }
    if (value == missing || value == deleted)
        goto slow;
    Py_INCREF(value);
    PyObject *hits = PyObject_GetAttr(part, s_hits), *more = NULL;
    if (hits != NULL) {
        more = PyNumber_Add(hits, one);
        Py_DECREF(hits);
    }
    if (more == NULL || PyObject_SetAttr(part, s_hits, more) < 0) {
        Py_XDECREF(more);
        Py_DECREF(value);
        goto done;
    }
    Py_DECREF(more);
    int fixed = PySet_Contains(immutable, (PyObject *)Py_TYPE(value));
    int source = fixed ? 1 : PyObject_IsTrue(self->source);
    if (fixed < 0 || source < 0) {
        Py_DECREF(value);
        goto done;
    }
    if (!source) { /* a value that can change in place: written back at the next checkpoint */
        PyObject *dirty = PyObject_GetAttr(part, s_dirty);
        if (dirty == NULL || PyObject_SetItem(dirty, key, value) < 0) {
            Py_XDECREF(dirty);
            Py_DECREF(value);
            goto done;
        }
        Py_DECREF(dirty);
    }
    out = value;
    goto done;
slow:
    Py_XDECREF(cache);
    Py_XDECREF(part);
    return PyObject_CallMethodOneArg((PyObject *)self, s_getitem, key);
done:
    Py_XDECREF(cache);
    Py_XDECREF(part);
    return out;
}

static int
access_ass_subscript(TableAccess *self, PyObject *key, PyObject *value)
{
    PyObject *part = NULL, *cache = NULL, *res;
    int out = -1;
    if (value == NULL) {
        res = PyObject_CallMethodOneArg((PyObject *)self, s_delitem, key);
        goto called;
    }
    if (self->ttl != Py_None || self->source == NULL)
        goto slow;
    int source = PyObject_IsTrue(self->source);
    if (source < 0)
        return -1;
    if (source)
        goto slow;
    if ((cache = task_part(self, &part)) == NULL) {
        if (PyErr_Occurred())
            return -1;
        goto slow;
    }
    int cached = PyDict_Contains(cache, key);
    if (cached < 0)
        goto done;
    if (!cached)
        goto slow;
    PyObject *dirty = PyObject_GetAttr(part, s_dirty);
    if (dirty == NULL)
        goto done;
    if (PyObject_SetItem(dirty, key, value) == 0 && PyDict_SetItem(cache, key, value) == 0)
        out = 0;
    Py_DECREF(dirty);
done:
    Py_XDECREF(cache);
    Py_XDECREF(part);
    return out;
slow:
    Py_XDECREF(cache);
    Py_XDECREF(part);
    {
        PyObject *args[3] = {(PyObject *)self, key, value};
        res = PyObject_VectorcallMethod(s_setitem, args, 3, NULL);
    }
called:
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

static PyMappingMethods access_mapping = {
    .mp_subscript = (binaryfunc)access_subscript,
    .mp_ass_subscript = (objobjargproc)access_ass_subscript,
};

static PyMemberDef access_members[] = {
    {"name", T_OBJECT, offsetof(TableAccess, name), 0, "the table's name"},
    {"ttl", T_OBJECT, offsetof(TableAccess, ttl), 0, "its keys' time to live, or None"},
    {"source", T_OBJECT, offsetof(TableAccess, source), 0, "read from a topic (read-only)"},
    {NULL},
};

static PyObject *
access_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    TableAccess *self = (TableAccess *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->name = Py_NewRef(Py_None);
    self->ttl = Py_NewRef(Py_None);
    self->source = Py_NewRef(Py_False);
    return (PyObject *)self;
}

static int
access_traverse(TableAccess *self, visitproc visit, void *arg)
{
    Py_VISIT(self->name);
    Py_VISIT(self->ttl);
    Py_VISIT(self->source);
    return 0;
}

static int
access_clear(TableAccess *self)
{
    Py_CLEAR(self->name);
    Py_CLEAR(self->ttl);
    Py_CLEAR(self->source);
    return 0;
}

static void
access_dealloc(TableAccess *self)
{
    PyObject_GC_UnTrack(self);
    access_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self); /* a subclass's dealloc releases its type */
}

static PyTypeObject TableAccessType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamkit.state._tables.TableAccess",
    .tp_doc = "A table's t[k] and t[k] = v in C (the base of Table).",
    .tp_basicsize = sizeof(TableAccess),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = access_new,
    .tp_as_mapping = &access_mapping,
    .tp_members = access_members,
    .tp_traverse = (traverseproc)access_traverse,
    .tp_clear = (inquiry)access_clear,
    .tp_dealloc = (destructor)access_dealloc,
};

/* Pop `key` from `d` if there (no error when absent). */
static int
pop_quietly(PyObject *d, PyObject *key)
{
    PyObject *found = PyDict_GetItemWithError(d, key);
    if (found == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return PyDict_DelItem(d, key);
}

static PyObject *
forget_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "forget_rows(cache: dict, dirty: dict, start, keys)");
        return NULL;
    }
    PyObject *cache = args[0], *dirty = args[1], *start = args[2];
    PyObject *it = PyObject_GetIter(args[3]), *key;
    if (it == NULL)
        return NULL;
    while ((key = PyIter_Next(it)) != NULL) {
        PyObject *row = PyTuple_Pack(2, start, key);
        Py_DECREF(key);
        if (row == NULL || pop_quietly(cache, row) < 0 || pop_quietly(dirty, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(row);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyContextVar_CheckExact(args[0]) || !PyFrozenSet_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(current_task: ContextVar, missing, deleted, immutable: "
                        "frozenset)");
        return NULL;
    }
    Py_XSETREF(current_task, Py_NewRef(args[0]));
    Py_XSETREF(missing, Py_NewRef(args[1]));
    Py_XSETREF(deleted, Py_NewRef(args[2]));
    Py_XSETREF(immutable, Py_NewRef(args[3]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"forget_rows", (PyCFunction)(void (*)(void))forget_rows, METH_FASTCALL,
     "forget_rows(cache, dirty, start, keys): pop (start, key) of each key from both dicts"},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(current_task, missing, deleted, immutable): once, at import"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tables", "A table's per-access calls in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__tables(void)
{
    if ((s_tables = PyUnicode_InternFromString("tables")) == NULL ||
        (s_cache = PyUnicode_InternFromString("cache")) == NULL ||
        (s_dirty = PyUnicode_InternFromString("dirty")) == NULL ||
        (s_hits = PyUnicode_InternFromString("hits")) == NULL ||
        (s_getitem = PyUnicode_InternFromString("_getitem")) == NULL ||
        (s_setitem = PyUnicode_InternFromString("_setitem")) == NULL ||
        (s_delitem = PyUnicode_InternFromString("_delitem")) == NULL ||
        (one = PyLong_FromLong(1)) == NULL)
        return NULL;
    if (PyType_Ready(&TableAccessType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "TableAccess", (PyObject *)&TableAccessType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
