/* The `streamkit.state._joinindex` module: the join's index (`_joinindex.c`) and its push
 * (`_joinpush.c`), whose Python references are `join_index.JoinIndex` and
 * `stream_join.JoinPartition._push`. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_joinindex.h"
#include "_joinpush.h"

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_joinindex", NULL, -1, NULL,
};

PyMODINIT_FUNC
PyInit__joinindex(void)
{
    if (joinindex_ready() < 0 || joinpush_ready() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "JoinIndex", (PyObject *)&JoinIndexType) < 0 ||
        PyModule_AddObjectRef(m, "JoinPush", (PyObject *)&JoinPushType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
