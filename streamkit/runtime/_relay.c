/* A relay stage's records in C: a stage whose only operator is a key_by on a field of its
 * one source topic's JSON values, forwarded unchanged (`runtime/relay.py` decides which stages
 * qualify and does the task's bookkeeping per batch).
 *
 * `Relay(records, route, field, encode_key, utf8_keys, key_check)`; `relay(limit)` takes
 * records from the left of the deque `records`, at most `limit`, while each is sure:
 *
 *   - its value is bytes that `scan` accepts: a JSON document orjson would decode to a dict
 *     whose member `field` is a str without escapes or an integer (see `scan`);
 *   - its key is None, or bytes its topic's key codec decodes for sure (`key_check`: 0 the raw
 *     codec, any bytes; 1 the str codec, ASCII only; 2 none but None).
 *
 * For each: the key's bytes (the str's own when `utf8_keys`, else `encode_key(str or int)`),
 * then `route(key bytes, the record's value, its timestamp, its headers)`; a True answer (a
 * batch filled up) ends the call. A record that is not sure, or whose route raises, ends it
 * before that record, which the task's per-record path then takes (and dead-letters, if bad).
 * Returns None when no record was taken, else (count, last record, largest timestamp, filled
 * up).
 *
 * `scan_field(data, field)`: what `scan` finds, as the Python value (None: not sure); for the
 * tests against orjson. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_DIGITS 40   /* with two exponent digits at most: no number overflows a double */
#define MAX_INT_CHARS 18 /* an integer field value fits a long long */

typedef struct {
    const unsigned char *start; /* the field's value: a string's contents or an integer */
    Py_ssize_t len;
    int is_str;
} Found;

static const unsigned char *
skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* `p` at a string's opening quote: after its closing quote, or NULL if not sure (a byte
 * outside printable ASCII, a \u escape, an invalid escape, no end). `*escaped`: it has one. */
static const unsigned char *
string_end(const unsigned char *p, const unsigned char *end, int *escaped)
{
    *escaped = 0;
    for (p++; p < end; p++) {
        unsigned char c = *p;
        if (c == '"')
            return p + 1;
        if (c < 0x20 || c >= 0x80)
            return NULL;
        if (c == '\\') {
            if (p + 1 >= end || strchr("\"\\/bfnrt", p[1]) == NULL || p[1] == '\0')
                return NULL;
            *escaped = 1;
            p++;
        }
    }
    return NULL;
}

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* `p` at a number: after it, or NULL if not a JSON number we are sure of. `*integer`: no
 * fraction, no exponent. */
static const unsigned char *
number_end(const unsigned char *p, const unsigned char *end, int *integer)
{
    int digits = 0, exponent = 0;
    if (p < end && *p == '-')
        p++;
    if (p >= end || !is_digit(*p))
        return NULL;
    if (*p == '0') {
        p++;
        digits = 1;
    } else {
        while (p < end && is_digit(*p)) {
            p++;
            digits++;
        }
    }
    *integer = 1;
    if (p < end && *p == '.') {
        int fraction = 0;
        for (p++; p < end && is_digit(*p); p++)
            fraction++;
        if (!fraction)
            return NULL;
        digits += fraction;
        *integer = 0;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        for (; p < end && is_digit(*p); p++)
            exponent++;
        if (exponent == 0 || exponent > 2)
            return NULL;
        *integer = 0;
    }
    return digits > MAX_DIGITS ? NULL : p;
}

static const unsigned char *
literal_end(const unsigned char *p, const unsigned char *end)
{
    static const char *words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(end - p) >= n && memcmp(p, words[i], n) == 0)
            return p + n;
    }
    return NULL;
}

/* 1 if `data` is, for sure, a JSON document orjson decodes to a dict with one member named
 * `field` whose value is a str without escapes or an integer of at most MAX_INT_CHARS
 * characters (`found`); 0 if not sure. Printable ASCII only, no \u escape, depth at most
 * MAX_DEPTH, numbers of at most MAX_DIGITS digits: orjson accepts every document this does,
 * and what it does not accept may still be valid (the per-record path decides). */
static int
scan(const unsigned char *p, Py_ssize_t n, const char *field, Py_ssize_t field_len, Found *found)
{
    const unsigned char *end = p + n, *q;
    unsigned char stack[MAX_DEPTH];
    int depth = 0, escaped, integer;
    found->start = NULL;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return 0;
    stack[depth++] = '{';
    p++;
    for (;;) { /* at an element of the innermost container (its first, or after a comma) */
        int is_field = 0;
        p = skip_ws(p, end);
        if (p >= end)
            return 0;
        if (stack[depth - 1] == '{') {
            if (*p != '"' || (q = string_end(p, end, &escaped)) == NULL)
                return 0;
            if (depth == 1) {
                if (escaped)
                    return 0; /* a member name with an escape might unescape to `field` */
                is_field = q - p - 2 == field_len && memcmp(p + 1, field, field_len) == 0;
                if (is_field && found->start != NULL)
                    return 0; /* twice: orjson keeps the last; not worth it */
            }
            p = skip_ws(q, end);
            if (p >= end || *p != ':')
                return 0;
            p = skip_ws(p + 1, end);
            if (p >= end)
                return 0;
        }
        unsigned char c = *p;
        if (c == '{' || c == '[') {
            if (is_field || depth == MAX_DEPTH)
                return 0;
            stack[depth++] = c;
            p = skip_ws(p + 1, end);
            if (p < end && *p == (c == '{' ? '}' : ']')) { /* empty */
                p++;
                depth--;
            } else {
                continue;
            }
        } else if (c == '"') {
            if ((q = string_end(p, end, &escaped)) == NULL || (is_field && escaped))
                return 0;
            if (is_field) {
                found->start = p + 1;
                found->len = q - p - 2;
                found->is_str = 1;
            }
            p = q;
        } else if (c == '-' || is_digit(c)) {
            if ((q = number_end(p, end, &integer)) == NULL)
                return 0;
            if (is_field) {
                if (!integer || q - p > MAX_INT_CHARS)
                    return 0;
                found->start = p;
                found->len = q - p;
                found->is_str = 0;
            }
            p = q;
        } else {
            if (is_field || (q = literal_end(p, end)) == NULL)
                return 0;
            p = q;
        }
        for (;;) { /* after a value: a comma, or the end of its container (and perhaps more) */
            p = skip_ws(p, end);
            if (p >= end)
                return 0;
            if (*p == ',') {
                p++;
                break;
            }
            if (*p != (stack[depth - 1] == '{' ? '}' : ']'))
                return 0;
            p++;
            if (--depth == 0)
                return skip_ws(p, end) == end && found->start != NULL;
        }
    }
}

/* The Python value of what `scan` found: a str, or an int. */
static PyObject *
found_value(const Found *found)
{
    if (found->is_str)
        return PyUnicode_DecodeASCII((const char *)found->start, found->len, NULL);
    char digits[MAX_INT_CHARS + 1];
    memcpy(digits, found->start, found->len);
    digits[found->len] = '\0';
    return PyLong_FromLongLong(strtoll(digits, NULL, 10));
}

typedef struct {
    PyObject_HEAD
    PyObject *records, *popleft, *route, *field, *encode_key;
    const char *field_utf8;
    Py_ssize_t field_len;
    int utf8_keys, key_check;
} Relay;

static PyObject *s_key, *s_value, *s_timestamp, *s_headers;

/* Whether a record's key decodes for sure with its topic's key codec. */
static int
key_sure(int check, PyObject *key)
{
    if (key == Py_None)
        return 1;
    if (!PyBytes_CheckExact(key) || check == 2)
        return 0;
    if (check == 0)
        return 1;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(key);
    for (Py_ssize_t i = 0, n = PyBytes_GET_SIZE(key); i < n; i++)
        if (p[i] >= 0x80)
            return 0;
    return 1;
}

/* The key bytes of a record (its `value`) that is sure (NULL with no error set: not sure;
 * with one: failed). */
static PyObject *
key_bytes(Relay *self, PyObject *rec, PyObject *value)
{
    PyObject *key = PyObject_GetAttr(rec, s_key), *out = NULL;
    if (key == NULL)
        return NULL;
    int sure = key_sure(self->key_check, key);
    Py_DECREF(key);
    if (!sure)
        return NULL;
    Found found;
    if (PyBytes_CheckExact(value) &&
        scan((const unsigned char *)PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value),
             self->field_utf8, self->field_len, &found)) {
        if (self->utf8_keys && found.is_str) {
            out = PyBytes_FromStringAndSize((const char *)found.start, found.len);
        } else {
            PyObject *k = found_value(&found);
            if (k != NULL) {
                out = PyObject_CallOneArg(self->encode_key, k);
                Py_DECREF(k);
                if (out != NULL && !PyBytes_Check(out))
                    Py_CLEAR(out);
            }
            if (out == NULL)
                PyErr_Clear(); /* the per-record path meets the same error, and reports it */
        }
    }
    return out;
}

static PyObject *
relay_call(Relay *self, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t limit, n = 0;
    if (!PyArg_ParseTuple(args, "n:relay", &limit))
        return NULL;
    PyObject *last = NULL, *rec = NULL, *bytes = NULL, *value = NULL, *ts = NULL;
    PyObject *headers = NULL, *full = NULL;
    long long max_ts = 0;
    int filled = 0;
    while (n < limit && !filled && PyObject_Length(self->records) > 0) {
        if ((rec = PySequence_GetItem(self->records, 0)) == NULL)
            goto failed;
        if ((value = PyObject_GetAttr(rec, s_value)) == NULL)
            goto failed;
        if ((bytes = key_bytes(self, rec, value)) == NULL) {
            if (PyErr_Occurred())
                goto failed;
            break; /* not sure: the per-record path takes it */
        }
        if ((ts = PyObject_GetAttr(rec, s_timestamp)) == NULL ||
            (headers = PyObject_GetAttr(rec, s_headers)) == NULL)
            goto failed;
        long long t = PyLong_AsLongLong(ts);
        if (t == -1 && PyErr_Occurred())
            goto failed;
        PyObject *call[4] = {bytes, value, ts, headers};
        if ((full = PyObject_Vectorcall(self->route, call, 4, NULL)) == NULL) {
            PyErr_Clear(); /* the per-record path routes it again, and reports the error */
            break;
        }
        if ((filled = PyObject_IsTrue(full)) < 0)
            goto failed;
        PyObject *popped = PyObject_CallNoArgs(self->popleft);
        if (popped == NULL)
            goto failed;
        Py_DECREF(popped);
        if (n == 0 || t > max_ts)
            max_ts = t;
        n++;
        Py_XSETREF(last, rec);
        rec = NULL;
        Py_CLEAR(bytes);
        Py_CLEAR(value);
        Py_CLEAR(ts);
        Py_CLEAR(headers);
        Py_CLEAR(full);
    }
    Py_XDECREF(rec); /* a record left for the per-record path */
    Py_XDECREF(bytes);
    Py_XDECREF(value);
    Py_XDECREF(ts);
    Py_XDECREF(headers);
    if (n == 0) {
        Py_XDECREF(last);
        Py_RETURN_NONE;
    }
    PyObject *out = Py_BuildValue("(nNLO)", n, last, max_ts, filled ? Py_True : Py_False);
    return out;
failed:
    Py_XDECREF(rec);
    Py_XDECREF(bytes);
    Py_XDECREF(value);
    Py_XDECREF(ts);
    Py_XDECREF(headers);
    Py_XDECREF(full);
    Py_XDECREF(last);
    return NULL;
}

static PyObject *
relay_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *records, *route, *field, *encode_key;
    int utf8_keys, key_check;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOUOpi:Relay", &records, &route, &field, &encode_key,
                          &utf8_keys, &key_check))
        return NULL;
    if (key_check < 0 || key_check > 2) {
        PyErr_SetString(PyExc_ValueError, "key_check: 0, 1 or 2");
        return NULL;
    }
    Py_ssize_t field_len;
    const char *field_utf8 = PyUnicode_AsUTF8AndSize(field, &field_len);
    if (field_utf8 == NULL)
        return NULL;
    PyObject *popleft = PyObject_GetAttrString(records, "popleft");
    if (popleft == NULL)
        return NULL;
    Relay *self = (Relay *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(popleft);
        return NULL;
    }
    self->records = Py_NewRef(records);
    self->popleft = popleft;
    self->route = Py_NewRef(route);
    self->field = Py_NewRef(field); /* keeps `field_utf8` alive */
    self->encode_key = Py_NewRef(encode_key);
    self->field_utf8 = field_utf8;
    self->field_len = field_len;
    self->utf8_keys = utf8_keys;
    self->key_check = key_check;
    return (PyObject *)self;
}

static int
relay_traverse(Relay *self, visitproc visit, void *arg)
{
    Py_VISIT(self->records);
    Py_VISIT(self->popleft);
    Py_VISIT(self->route);
    Py_VISIT(self->field);
    Py_VISIT(self->encode_key);
    return 0;
}

static int
relay_clear(Relay *self)
{
    Py_CLEAR(self->records);
    Py_CLEAR(self->popleft);
    Py_CLEAR(self->route);
    Py_CLEAR(self->field);
    Py_CLEAR(self->encode_key);
    return 0;
}

static void
relay_dealloc(Relay *self)
{
    PyObject_GC_UnTrack(self);
    relay_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RelayType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streamkit.runtime._relay.Relay",
    .tp_doc = "Relay(records, route, field, encode_key, utf8_keys, key_check): relay(limit)",
    .tp_basicsize = sizeof(Relay),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_call = (ternaryfunc)relay_call,
    .tp_new = relay_new,
    .tp_traverse = (traverseproc)relay_traverse,
    .tp_clear = (inquiry)relay_clear,
    .tp_dealloc = (destructor)relay_dealloc,
};

static PyObject *
scan_field(PyObject *module, PyObject *args)
{
    Py_buffer data;
    const char *field;
    Py_ssize_t field_len;
    if (!PyArg_ParseTuple(args, "y*s#:scan_field", &data, &field, &field_len))
        return NULL;
    Found found;
    int sure = scan((const unsigned char *)data.buf, data.len, field, field_len, &found);
    PyBuffer_Release(&data);
    if (!sure)
        Py_RETURN_NONE;
    return found_value(&found);
}

static PyMethodDef methods[] = {
    {"scan_field", scan_field, METH_VARARGS,
     "scan_field(data, field): the field's str or int value if sure, else None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_relay", "A relay stage's records in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__relay(void)
{
    if ((s_key = PyUnicode_InternFromString("key")) == NULL ||
        (s_value = PyUnicode_InternFromString("value")) == NULL ||
        (s_timestamp = PyUnicode_InternFromString("timestamp")) == NULL ||
        (s_headers = PyUnicode_InternFromString("headers")) == NULL)
        return NULL;
    if (PyType_Ready(&RelayType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Relay", (PyObject *)&RelayType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
