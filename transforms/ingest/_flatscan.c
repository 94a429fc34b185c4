/* One pass over JSON lines that are flat objects of scalars: the compiled fast path of
 * transforms.ingest.flatjson.
 *
 * It accepts exactly the lines the Arrow path accepts (flatjson.FLAT, without duplicate keys)
 * and writes, for the lines it takes, each declared field's slots as Arrow buffers, plus the
 * undeclared fields as JSON text and the first undeclared name. Every other line is left to
 * the per-line parser, which stays the reference for what a line means.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_NULL = 1, KIND_STR = 2, KIND_INT = 3, KIND_FLOAT = 4, KIND_BOOL = 5 };

/* Byte classes inside a string: 0 plain ASCII, 1 '"', 2 never allowed (control, '\', bad
 * lead byte), 3..5 lead byte of a 2..4 byte UTF-8 sequence. */
static unsigned char str_class[256];

static void init_classes(void) {
    for (int c = 0; c < 256; c++) {
        unsigned char k = 2;
        if (c >= 0x20 && c <= 0x7f) k = 0;
        else if (c >= 0xc2 && c <= 0xdf) k = 3;
        else if (c >= 0xe0 && c <= 0xef) k = 4;
        else if (c >= 0xf0 && c <= 0xf4) k = 5;
        str_class[c] = k;
    }
    str_class['"'] = 1;
    str_class['\\'] = 2;
}

static inline int is_cont(unsigned char c) { return c >= 0x80 && c <= 0xbf; }

/* Scans a string whose opening quote is at p[-1]; returns the closing quote or NULL. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *e) {
    while (p < e) {
        unsigned char k = str_class[*p];
        if (k == 0) {
            p++;
            continue;
        }
        if (k == 1) return p;
        if (k == 2) return NULL;
        unsigned char c = *p;
        if (k == 3) {
            if (e - p < 2 || !is_cont(p[1])) return NULL;
            p += 2;
        } else if (k == 4) {
            if (e - p < 3 || !is_cont(p[2])) return NULL;
            unsigned char lo = 0x80, hi = 0xbf;
            if (c == 0xe0) lo = 0xa0;
            else if (c == 0xed) hi = 0x9f; /* no surrogates */
            if (p[1] < lo || p[1] > hi) return NULL;
            p += 3;
        } else {
            if (e - p < 4 || !is_cont(p[2]) || !is_cont(p[3])) return NULL;
            unsigned char lo = 0x80, hi = 0xbf;
            if (c == 0xf0) lo = 0x90;
            else if (c == 0xf4) hi = 0x8f;
            if (p[1] < lo || p[1] > hi) return NULL;
            p += 4;
        }
    }
    return NULL;
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *e) {
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    return p;
}

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

typedef struct {
    unsigned char kind;
    const unsigned char *s; /* string bytes, or the token of a number / true / false */
    Py_ssize_t len;
    int64_t i;
    double f;
} Value;

/* A number as flatjson._NUM allows it: at most 18 integer digits, 17 fraction digits and 2
 * exponent digits. Returns the end of the token or NULL. */
static const unsigned char *scan_number(const unsigned char *p, const unsigned char *e, Value *v) {
    const unsigned char *start = p;
    int neg = 0;
    if (p < e && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= e || *p < '0' || *p > '9') return NULL;
    uint64_t mant = 0;
    int digits = 0; /* significant digits held in mant */
    int int_digits = 0;
    if (*p == '0') {
        p++;
        int_digits = 1;
    } else {
        while (p < e && *p >= '0' && *p <= '9') {
            if (++int_digits > 18) return NULL;
            mant = mant * 10 + (uint64_t)(*p - '0');
            digits++;
            p++;
        }
    }
    int frac_digits = 0, is_float = 0, exp = 0;
    if (p < e && *p == '.') {
        p++;
        is_float = 1;
        while (p < e && *p >= '0' && *p <= '9') {
            if (++frac_digits > 17) return NULL;
            if (mant || *p != '0') digits++;
            mant = mant * 10 + (uint64_t)(*p - '0');
            p++;
        }
        if (!frac_digits) return NULL;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        is_float = 1;
        int eneg = 0, edigits = 0;
        if (p < e && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        while (p < e && *p >= '0' && *p <= '9') {
            if (++edigits > 2) return NULL;
            exp = exp * 10 + (*p - '0');
            p++;
        }
        if (!edigits) return NULL;
        if (eneg) exp = -exp;
    }
    v->s = start;
    v->len = p - start;
    if (!is_float) {
        v->kind = KIND_INT;
        v->i = neg ? -(int64_t)mant : (int64_t)mant;
        return p;
    }
    v->kind = KIND_FLOAT;
    int e10 = exp - frac_digits;
    /* Exact operands and one IEEE operation: correctly rounded (Clinger's fast path). */
    if (digits <= 15 && e10 >= -22 && e10 <= 22) {
        double d = (double)mant;
        d = e10 < 0 ? d / POW10[-e10] : d * POW10[e10];
        v->f = neg ? -d : d;
        return p;
    }
    char tmp[64];
    memcpy(tmp, start, (size_t)v->len);
    tmp[v->len] = 0;
    v->f = strtod(tmp, NULL);
    return p;
}

/* Growable output bytes: a bytearray written in place and cut to size at the end. */
typedef struct {
    PyObject *obj;
    char *p;
    Py_ssize_t len;
} Out;

static int out_init(Out *o, Py_ssize_t cap, int zero) {
    o->obj = PyByteArray_FromStringAndSize(NULL, cap > 0 ? cap : 1);
    if (!o->obj) return -1;
    o->p = PyByteArray_AS_STRING(o->obj);
    o->len = 0;
    if (zero) memset(o->p, 0, (size_t)(cap > 0 ? cap : 1));
    return 0;
}

static inline void put(Out *o, const void *s, Py_ssize_t n) {
    memcpy(o->p + o->len, s, (size_t)n);
    o->len += n;
}

static inline void set_bit(Out *bits, Py_ssize_t row) { bits->p[row >> 3] |= (char)(1u << (row & 7)); }

/* Canonical decimal text of an int64 (what Arrow's cast to string writes). */
static Py_ssize_t int_text(int64_t v, char *buf) {
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    Py_ssize_t len = 0;
    if (v < 0) buf[len++] = '-';
    while (n) buf[len++] = tmp[--n];
    return len;
}

/* The value buffer of a field's ints or floats, made when the field's first number is met:
 * most fields hold none, and untouched rows cost nothing. Rows before it are zeroed. Takes
 * the GIL for the allocation; on failure the error is set. */
static int numbers(Out *o, Py_ssize_t n, Py_ssize_t m, PyThreadState *save) {
    PyEval_RestoreThread(save);
    int bad = out_init(o, 8 * n, 0);
    PyEval_SaveThread();
    if (bad) return -1;
    memset(o->p, 0, (size_t)(8 * m));
    return 0;
}

typedef struct {
    const unsigned char *name;
    Py_ssize_t len;
} Name;

typedef struct {
    Out kinds, sbits, soffs, sdata, ibits, ints, fbits, floats;
    Py_ssize_t nfloat;
} Field;

#define MAX_EXTRA 64
#define MAX_KEYS 64

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer data, offsets;
    PyObject *names;
    if (!PyArg_ParseTuple(args, "y*y*O!", &data, &offsets, &PyTuple_Type, &names)) return NULL;
    PyObject *result = NULL;
    Field *fields = NULL;
    Name *fnames = NULL;
    int64_t *seen = NULL;
    Out status = {0}, xbits = {0}, xoffs = {0}, xdata = {0}, ubits = {0}, uoffs = {0}, udata = {0};
    Out roffs = {0}, rdata = {0};
    Py_ssize_t nf = PyTuple_GET_SIZE(names);
    Py_ssize_t n = offsets.len / (Py_ssize_t)sizeof(int64_t) - 1;
    const int64_t *off = (const int64_t *)offsets.buf;
    const unsigned char *buf = (const unsigned char *)data.buf;
    if (n < 0 || offsets.len % (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "offsets must be int64, one more than the lines");
        goto done;
    }
    if (n > 0 && (off[0] < 0 || off[n] > data.len || off[n] - off[0] >= INT32_MAX)) {
        PyErr_SetString(PyExc_ValueError, "offsets out of the data's range");
        goto done;
    }
    for (Py_ssize_t r = 0; r < n; r++) {
        if (off[r + 1] < off[r]) {
            PyErr_SetString(PyExc_ValueError, "offsets must not decrease");
            goto done;
        }
    }
    Py_ssize_t span = n > 0 ? (Py_ssize_t)(off[n] - off[0]) : 0;
    Py_ssize_t nbits = (n + 7) / 8;
    fields = PyMem_Calloc((size_t)(nf ? nf : 1), sizeof(Field));
    fnames = PyMem_Calloc((size_t)(nf ? nf : 1), sizeof(Name));
    seen = PyMem_Calloc((size_t)(nf ? nf : 1), sizeof(int64_t));
    Value *vals = PyMem_Calloc((size_t)(nf ? nf : 1), sizeof(Value));
    if (!fields || !fnames || !seen || !vals) {
        PyMem_Free(vals);
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t f = 0; f < nf; f++) {
        PyObject *name = PyTuple_GET_ITEM(names, f);
        if (!PyBytes_Check(name)) {
            PyMem_Free(vals);
            PyErr_SetString(PyExc_TypeError, "field names must be bytes");
            goto done;
        }
        fnames[f].name = (const unsigned char *)PyBytes_AS_STRING(name);
        fnames[f].len = PyBytes_GET_SIZE(name);
        seen[f] = -1;
        Field *fd = &fields[f];
        if (out_init(&fd->kinds, n, 0) || out_init(&fd->sbits, nbits, 1) || out_init(&fd->soffs, 4 * (n + 1), 0) ||
            out_init(&fd->sdata, span, 0) || out_init(&fd->ibits, nbits, 1) || out_init(&fd->fbits, nbits, 1)) {
            PyMem_Free(vals);
            goto done;
        }
    }
    if (out_init(&status, n, 0) || out_init(&xbits, nbits, 1) || out_init(&xoffs, 4 * (n + 1), 0) ||
        out_init(&xdata, span, 0) || out_init(&ubits, nbits, 1) || out_init(&uoffs, 4 * (n + 1), 0) ||
        out_init(&udata, span, 0) || out_init(&roffs, 4 * (n + 1), 0) || out_init(&rdata, span, 0)) {
        PyMem_Free(vals);
        goto done;
    }

    Py_ssize_t m = 0; /* rows taken */
    int32_t zero = 0;
    for (Py_ssize_t f = 0; f < nf; f++) put(&fields[f].soffs, &zero, 4);
    put(&xoffs, &zero, 4);
    put(&uoffs, &zero, 4);
    put(&roffs, &zero, 4);
    Name extra_key[MAX_EXTRA];
    Py_ssize_t order[MAX_KEYS];
    for (int k = 0; k < MAX_KEYS; k++) order[k] = nf;
    Value extra_val[MAX_EXTRA];

    int failed = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t r = 0; r < n; r++) {
        const unsigned char *p = buf + off[r], *e = buf + off[r + 1];
        int nextra = 0, ok = 0, slow_extra = 0, key_at = 0;
        for (Py_ssize_t f = 0; f < nf; f++) vals[f].kind = KIND_NULL;
        p = skip_ws(p, e);
        if (p >= e || *p != '{') goto line_done;
        p = skip_ws(p + 1, e);
        if (p < e && *p == '}') {
            p++;
        } else {
            for (;;) {
                if (p >= e || *p != '"') goto line_done;
                const unsigned char *ks = p + 1, *ke = scan_string(ks, e);
                if (!ke) goto line_done;
                p = skip_ws(ke + 1, e);
                if (p >= e || *p != ':') goto line_done;
                p = skip_ws(p + 1, e);
                if (p >= e) goto line_done;
                Value v;
                if (*p == '"') {
                    const unsigned char *vs = p + 1, *ve = scan_string(vs, e);
                    if (!ve) goto line_done;
                    v.kind = KIND_STR;
                    v.s = vs;
                    v.len = ve - vs;
                    p = ve + 1;
                } else if (*p == 't' || *p == 'f' || *p == 'n') {
                    const char *word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
                    Py_ssize_t wl = (Py_ssize_t)strlen(word);
                    if (e - p < wl || memcmp(p, word, (size_t)wl)) goto line_done;
                    v.kind = *p == 'n' ? KIND_NULL : KIND_BOOL;
                    v.s = p;
                    v.len = wl;
                    p += wl;
                } else {
                    p = scan_number(p, e, &v);
                    if (!p) goto line_done;
                }
                /* Lines of a file mostly keep one key order: the field this key position
                 * held in the last line is tried first. */
                Py_ssize_t klen = ke - ks, f = key_at < MAX_KEYS ? order[key_at] : nf;
                if (f >= nf || fnames[f].len != klen || memcmp(fnames[f].name, ks, (size_t)klen)) {
                    for (f = 0; f < nf; f++) {
                        if (fnames[f].len == klen && !memcmp(fnames[f].name, ks, (size_t)klen)) break;
                    }
                }
                if (key_at < MAX_KEYS) order[key_at] = f;
                key_at++;
                if (f < nf) {
                    if (seen[f] == r) goto line_done; /* duplicate key */
                    seen[f] = r;
                    vals[f] = v;
                } else {
                    if (nextra == MAX_EXTRA) goto line_done;
                    for (int x = 0; x < nextra; x++) {
                        if (extra_key[x].len == klen && !memcmp(extra_key[x].name, ks, (size_t)klen)) goto line_done;
                    }
                    extra_key[nextra].name = ks;
                    extra_key[nextra].len = klen;
                    extra_val[nextra++] = v;
                    /* orjson writes floats (and -0) in its own way: left to it. */
                    if (v.kind == KIND_FLOAT) slow_extra = 1;
                }
                p = skip_ws(p, e);
                if (p < e && *p == ',') {
                    p = skip_ws(p + 1, e);
                    continue;
                }
                if (p < e && *p == '}') {
                    p++;
                    break;
                }
                goto line_done;
            }
        }
        p = skip_ws(p, e);
        ok = p == e;
    line_done:
        if (!ok) {
            status.p[r] = 0;
            continue;
        }
        status.p[r] = slow_extra ? 2 : 1;
        for (Py_ssize_t f = 0; f < nf; f++) {
            Field *fd = &fields[f];
            Value *v = &vals[f];
            int64_t iv = 0;
            double dv = 0.0;
            switch (v->kind) {
            case KIND_STR:
                put(&fd->sdata, v->s, v->len);
                set_bit(&fd->sbits, m);
                break;
            case KIND_INT: {
                if (!fd->ints.obj && numbers(&fd->ints, n, m, _save)) goto scan_failed;
                char tmp[24];
                put(&fd->sdata, tmp, int_text(v->i, tmp));
                set_bit(&fd->sbits, m);
                set_bit(&fd->ibits, m);
                iv = v->i;
                break;
            }
            case KIND_FLOAT:
                if (!fd->floats.obj && numbers(&fd->floats, n, m, _save)) goto scan_failed;
                set_bit(&fd->fbits, m);
                dv = v->f;
                fd->nfloat++;
                break;
            case KIND_BOOL:
                put(&fd->sdata, v->s, v->len);
                set_bit(&fd->sbits, m);
                break;
            default:
                break;
            }
            fd->kinds.p[m] = (char)v->kind;
            if (fd->ints.obj) memcpy(fd->ints.p + 8 * m, &iv, 8);
            if (fd->floats.obj) memcpy(fd->floats.p + 8 * m, &dv, 8);
            int32_t so = (int32_t)fd->sdata.len;
            memcpy(fd->soffs.p + 4 * (m + 1), &so, 4);
        }
        if (nextra) {
            set_bit(&ubits, m);
            put(&udata, extra_key[0].name, extra_key[0].len);
            if (!slow_extra) {
                set_bit(&xbits, m);
                for (int x = 0; x < nextra; x++) {
                    put(&xdata, x ? ",\"" : "{\"", 2);
                    put(&xdata, extra_key[x].name, extra_key[x].len);
                    put(&xdata, "\":", 2);
                    Value *v = &extra_val[x];
                    if (v->kind == KIND_STR) {
                        put(&xdata, "\"", 1);
                        put(&xdata, v->s, v->len);
                        put(&xdata, "\"", 1);
                    } else if (v->kind == KIND_INT) {
                        char tmp[24];
                        put(&xdata, tmp, int_text(v->i, tmp));
                    } else {
                        put(&xdata, v->s, v->len);
                    }
                }
                put(&xdata, "}", 1);
            }
        }
        put(&rdata, buf + off[r], (Py_ssize_t)(off[r + 1] - off[r]));
        int32_t xo = (int32_t)xdata.len, uo = (int32_t)udata.len, ro = (int32_t)rdata.len;
        memcpy(xoffs.p + 4 * (m + 1), &xo, 4);
        memcpy(uoffs.p + 4 * (m + 1), &uo, 4);
        memcpy(roffs.p + 4 * (m + 1), &ro, 4);
        m++;
        continue;
    scan_failed:
        failed = 1;
        break;
    }
    Py_END_ALLOW_THREADS;
    PyMem_Free(vals);
    if (failed) goto done;

    /* Data buffers are cut to what was written; fixed-width ones stay n rows long (the
     * caller reads the first m). */
    PyObject *cols = PyTuple_New(nf);
    if (!cols) goto done;
    for (Py_ssize_t f = 0; f < nf; f++) {
        Field *fd = &fields[f];
        if (PyByteArray_Resize(fd->sdata.obj, fd->sdata.len ? fd->sdata.len : 1)) {
            Py_DECREF(cols);
            goto done;
        }
        PyObject *t = Py_BuildValue("(OOOOOOOOn)", fd->kinds.obj, fd->sbits.obj, fd->soffs.obj, fd->sdata.obj,
                                    fd->ibits.obj, fd->ints.obj ? fd->ints.obj : Py_None, fd->fbits.obj,
                                    fd->floats.obj ? fd->floats.obj : Py_None, fd->nfloat);
        if (!t) {
            Py_DECREF(cols);
            goto done;
        }
        PyTuple_SET_ITEM(cols, f, t);
    }
    if (PyByteArray_Resize(xdata.obj, xdata.len ? xdata.len : 1) ||
        PyByteArray_Resize(udata.obj, udata.len ? udata.len : 1) ||
        PyByteArray_Resize(rdata.obj, rdata.len ? rdata.len : 1)) {
        Py_DECREF(cols);
        goto done;
    }
    result = Py_BuildValue("(nON(OOO)(OOO)(OO))", m, status.obj, cols, xbits.obj, xoffs.obj, xdata.obj, ubits.obj,
                           uoffs.obj, udata.obj, roffs.obj, rdata.obj);

done:
    if (fields) {
        for (Py_ssize_t f = 0; f < nf; f++) {
            Field *fd = &fields[f];
            Py_XDECREF(fd->kinds.obj);
            Py_XDECREF(fd->sbits.obj);
            Py_XDECREF(fd->soffs.obj);
            Py_XDECREF(fd->sdata.obj);
            Py_XDECREF(fd->ibits.obj);
            Py_XDECREF(fd->ints.obj);
            Py_XDECREF(fd->fbits.obj);
            Py_XDECREF(fd->floats.obj);
        }
    }
    Py_XDECREF(status.obj);
    Py_XDECREF(xbits.obj);
    Py_XDECREF(xoffs.obj);
    Py_XDECREF(xdata.obj);
    Py_XDECREF(ubits.obj);
    Py_XDECREF(uoffs.obj);
    Py_XDECREF(udata.obj);
    Py_XDECREF(roffs.obj);
    Py_XDECREF(rdata.obj);
    PyMem_Free(fields);
    PyMem_Free(fnames);
    PyMem_Free(seen);
    PyBuffer_Release(&data);
    PyBuffer_Release(&offsets);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(data, offsets, names) -> (taken, status, columns, extras, unknown, lines)\n\n"
     "data: the lines' bytes; offsets: int64 line bounds into data (one more than the lines);\n"
     "names: the declared field names as bytes. status holds one byte per line: 0 left to the\n"
     "per-line parser, 1 taken, 2 taken but its undeclared fields are to be written by orjson.\n"
     "Taken lines are packed in input order: each column is (kinds, string validity, string\n"
     "offsets, string data, int validity, ints, float validity, floats, float count), Arrow\n"
     "buffers of which the first `taken` rows count (ints and floats are None where the field\n"
     "held no such value); floats have no text yet. extras and\n"
     "unknown are (validity, offsets, data) of string columns; lines (offsets, data) holds\n"
     "the taken lines themselves."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_flatscan", "Compiled scanner of flat JSON lines.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__flatscan(void) {
    init_classes();
    return PyModule_Create(&module);
}
