/* Compiled passes over whole Arrow buffers (transforms.colscan), each with an Arrow or numpy
 * twin that gives the same result where this module is not built.
 *
 * - string_coupons, word_coupons: the HLL library's coupons (transforms.quality.hll).
 * - string_stats: smallest and largest string, shortest and longest in characters.
 * - hash_partitions: transforms.records.hash_partition.
 * - iso_micros: the common ISO-8601 timestamps (the rest are left to Arrow's parser).
 *
 * A coupon is what datasketches' hll_sketch derives from MurmurHash3_x64_128 (seed 9001) of
 * a value's bytes: the rank (leading zeros of the second half, plus one, capped at 63) above
 * the low 26 bits of the first half.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define SEED 9001ULL
#define C1 0x87c37b91114253d5ULL
#define C2 0x4cf5ad432745937fULL
#define ADDR_MASK ((1ULL << 26) - 1)

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian hosts only: the module refuses to load elsewhere */
}

static inline uint64_t coupon(const unsigned char *p, size_t len) {
    uint64_t h1 = SEED, h2 = SEED, k1, k2;
    size_t blocks = len / 16;
    for (size_t i = 0; i < blocks; i++, p += 16) {
        k1 = load64(p);
        k2 = load64(p + 8);
        k1 *= C1; k1 = rotl(k1, 31); k1 *= C2; h1 ^= k1;
        h1 = rotl(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729;
        k2 *= C2; k2 = rotl(k2, 33); k2 *= C1; h2 ^= k2;
        h2 = rotl(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5;
    }
    size_t tail = len & 15;
    k1 = k2 = 0;
    for (size_t i = tail; i > 8; i--) k2 |= (uint64_t)p[i - 1] << (8 * (i - 9));
    for (size_t i = tail < 8 ? tail : 8; i > 0; i--) k1 |= (uint64_t)p[i - 1] << (8 * (i - 1));
    if (tail > 8) { k2 *= C2; k2 = rotl(k2, 33); k2 *= C1; h2 ^= k2; }
    if (tail > 0) { k1 *= C1; k1 = rotl(k1, 31); k1 *= C2; h1 ^= k1; }
    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 += h2;
    h2 += h1;
    uint64_t zeros = h2 ? (uint64_t)__builtin_clzll(h2) : 64;
    uint64_t rank = (zeros < 62 ? zeros : 62) + 1;
    return (rank << 26) | (h1 & ADDR_MASK);
}

static int get(PyObject *obj, Py_buffer *view, int writable) {
    return PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE);
}

/* string_coupons(offsets, data, out): coupons of n strings whose int64 offsets (n + 1 of
 * them) index ``data``; empty strings get 0. */
static PyObject *string_coupons(PyObject *self, PyObject *args) {
    PyObject *o_off, *o_data, *o_out;
    if (!PyArg_ParseTuple(args, "OOO", &o_off, &o_data, &o_out)) return NULL;
    Py_buffer off, data, out;
    if (get(o_off, &off, 0) < 0) return NULL;
    if (get(o_data, &data, 0) < 0) { PyBuffer_Release(&off); return NULL; }
    if (get(o_out, &out, 1) < 0) { PyBuffer_Release(&off); PyBuffer_Release(&data); return NULL; }
    Py_ssize_t n = out.len / 8;
    PyObject *result = NULL;
    if (out.len % 8 || off.len != (n + 1) * 8) {
        PyErr_SetString(PyExc_ValueError, "out must hold 8 bytes per string and offsets n + 1 int64s");
        goto done;
    }
    const unsigned char *base = (const unsigned char *)data.buf;
    const int64_t *offsets = (const int64_t *)off.buf;
    uint64_t *dst = (uint64_t *)out.buf;
    int bad = offsets[0] < 0 || offsets[n] > data.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        int64_t a = offsets[i], b = offsets[i + 1];
        if (b < a) bad = 1;
        else dst[i] = b > a ? coupon(base + a, (size_t)(b - a)) : 0;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets must be ascending and inside the data");
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

/* word_coupons(words, out): coupons of 8-byte values (int64, or a double's bits). */
static PyObject *word_coupons(PyObject *self, PyObject *args) {
    PyObject *o_in, *o_out;
    if (!PyArg_ParseTuple(args, "OO", &o_in, &o_out)) return NULL;
    Py_buffer in, out;
    if (get(o_in, &in, 0) < 0) return NULL;
    if (get(o_out, &out, 1) < 0) { PyBuffer_Release(&in); return NULL; }
    PyObject *result = NULL;
    if (in.len % 8 || out.len != in.len) {
        PyErr_SetString(PyExc_ValueError, "words and out must both hold 8 bytes per value");
    } else {
        const unsigned char *src = (const unsigned char *)in.buf;
        uint64_t *dst = (uint64_t *)out.buf;
        Py_ssize_t n = in.len / 8;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) dst[i] = coupon(src + 8 * i, 8);
        Py_END_ALLOW_THREADS
        Py_INCREF(Py_None);
        result = Py_None;
    }
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return result;
}

static inline int less(const unsigned char *a, int64_t na, const unsigned char *b, int64_t nb) {
    int c = memcmp(a, b, (size_t)(na < nb ? na : nb));
    return c < 0 || (c == 0 && na < nb);
}

/* UTF-8 characters: the bytes that are not continuation bytes (10xxxxxx). */
static inline int64_t chars(const unsigned char *p, int64_t n) {
    int64_t cont = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = load64(p + i);
        cont += __builtin_popcountll(w & ~(w << 1) & 0x8080808080808080ULL);
    }
    for (; i < n; i++) cont += (p[i] & 0xc0) == 0x80;
    return n - cont;
}

/* string_stats(offsets, data, valid): (index of the smallest string, of the largest, fewest
 * characters, most characters) over the entries ``valid`` marks (a byte per entry, or None for
 * all); None when there are none. Strings compare as bytes, as Arrow's min_max does. */
static PyObject *string_stats(PyObject *self, PyObject *args) {
    PyObject *o_off, *o_data, *o_valid;
    if (!PyArg_ParseTuple(args, "OOO", &o_off, &o_data, &o_valid)) return NULL;
    Py_buffer off, data, valid = {0};
    if (get(o_off, &off, 0) < 0) return NULL;
    if (get(o_data, &data, 0) < 0) { PyBuffer_Release(&off); return NULL; }
    if (o_valid != Py_None && get(o_valid, &valid, 0) < 0) {
        PyBuffer_Release(&off);
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = off.len / 8 - 1;
    const int64_t *offsets = (const int64_t *)off.buf;
    const unsigned char *mask = o_valid == Py_None ? NULL : (const unsigned char *)valid.buf;
    if (off.len % 8 || n < 0 || (mask && valid.len != n)) {
        PyErr_SetString(PyExc_ValueError, "offsets must be n + 1 int64s and valid n bytes");
        goto done;
    }
    const unsigned char *base = (const unsigned char *)data.buf;
    Py_ssize_t lo = -1, hi = -1;
    int64_t fewest = 0, most = 0;
    int bad = offsets[0] < 0 || offsets[n] > data.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        int64_t a = offsets[i], b = offsets[i + 1];
        if (b < a) { bad = 1; break; }
        if (mask && !mask[i]) continue;
        int64_t c = chars(base + a, b - a);
        if (lo < 0) {
            lo = hi = i;
            fewest = most = c;
            continue;
        }
        if (c < fewest) fewest = c;
        if (c > most) most = c;
        if (less(base + a, b - a, base + offsets[lo], offsets[lo + 1] - offsets[lo])) lo = i;
        else if (less(base + offsets[hi], offsets[hi + 1] - offsets[hi], base + a, b - a)) hi = i;
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets must be ascending and inside the data");
        goto done;
    }
    if (lo < 0) {
        Py_INCREF(Py_None);
        result = Py_None;
    } else {
        result = Py_BuildValue("nnLL", lo, hi, (long long)fewest, (long long)most);
    }
done:
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    if (mask) PyBuffer_Release(&valid);
    return result;
}

/* hash_partitions(offsets, data, weights, partitions, out): each string's partition, from the
 * sum over its bytes of (byte + 1) * weights[position % 256] (modulo 2**64), mixed. */
static PyObject *hash_partitions(PyObject *self, PyObject *args) {
    PyObject *o_off, *o_data, *o_w, *o_out;
    unsigned long long partitions;
    if (!PyArg_ParseTuple(args, "OOOKO", &o_off, &o_data, &o_w, &partitions, &o_out)) return NULL;
    Py_buffer off, data, w, out;
    if (get(o_off, &off, 0) < 0) return NULL;
    if (get(o_data, &data, 0) < 0) { PyBuffer_Release(&off); return NULL; }
    if (get(o_w, &w, 0) < 0) { PyBuffer_Release(&off); PyBuffer_Release(&data); return NULL; }
    if (get(o_out, &out, 1) < 0) {
        PyBuffer_Release(&off);
        PyBuffer_Release(&data);
        PyBuffer_Release(&w);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = out.len / 8;
    if (out.len % 8 || off.len != (n + 1) * 8 || w.len != 256 * 8 || partitions < 1 || partitions > INT64_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "out must hold n int64s, offsets n + 1 int64s, weights 256 uint64s; partitions >= 1");
        goto done;
    }
    const unsigned char *base = (const unsigned char *)data.buf;
    const int64_t *offsets = (const int64_t *)off.buf;
    const uint64_t *weights = (const uint64_t *)w.buf;
    int64_t *dst = (int64_t *)out.buf;
    int bad = offsets[0] < 0 || offsets[n] > data.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        int64_t a = offsets[i], b = offsets[i + 1];
        if (b < a) { bad = 1; break; }
        uint64_t h = 0;
        for (int64_t j = 0; j < b - a; j++) h += ((uint64_t)base[a + j] + 1) * weights[j & 255];
        h ^= h >> 31;
        h *= 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
        dst[i] = (int64_t)(h % partitions);
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets must be ascending and inside the data");
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    PyBuffer_Release(&w);
    PyBuffer_Release(&out);
    return result;
}

static inline int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static inline int digits(const unsigned char *p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* YYYY-MM-DD, optionally [T ]hh:mm[:ss[.f{1,6}]][Z|+hh[[:]mm]], between ASCII whitespace:
 * microseconds since the epoch (no offset means UTC). Returns 0 for anything else, including
 * out-of-range fields and more than 6 fractional digits: those are left to Arrow. */
static int parse_iso(const unsigned char *p, const unsigned char *e, int64_t *out) {
    while (p < e && is_space(*p)) p++;
    while (e > p && is_space(e[-1])) e--;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, zone = 0;
    if (e - p < 10 || p[4] != '-' || p[7] != '-') return 0;
    if (!digits(p, 4, &y) || !digits(p + 5, 2, &mo) || !digits(p + 8, 2, &d)) return 0;
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    /* Years 1 and 9999 can leave the calendar once an offset is applied: left to Arrow. */
    if (y < 2 || y > 9998 || mo < 1 || mo > 12 || d < 1) return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > dim[mo - 1] + (mo == 2 && leap)) return 0;
    p += 10;
    if (p < e) {
        if (*p != 'T' && *p != 't' && *p != ' ') return 0;
        p++;
        if (e - p < 5 || p[2] != ':' || !digits(p, 2, &h) || !digits(p + 3, 2, &mi)) return 0;
        p += 5;
        if (p < e && *p == ':') {
            if (e - p < 3 || !digits(p + 1, 2, &sec)) return 0;
            p += 3;
            if (p < e && *p == '.') {
                p++;
                int n = 0;
                while (p + n < e && p[n] >= '0' && p[n] <= '9') n++;
                if (n < 1 || n > 6) return 0;
                digits(p, n, &frac);
                for (int i = n; i < 6; i++) frac *= 10;
                p += n;
            }
        }
        if (h > 23 || mi > 59 || sec > 59) return 0;
        if (p < e && (*p == 'Z' || *p == 'z')) {
            p++;
        } else if (p < e && (*p == '+' || *p == '-')) {
            int sign = *p == '-' ? -1 : 1, zh, zm = 0;
            p++;
            if (e - p < 2 || !digits(p, 2, &zh)) return 0;
            p += 2;
            if (p < e) {
                if (*p == ':') p++;
                if (e - p < 2 || !digits(p, 2, &zm)) return 0;
                p += 2;
            }
            if (zh > 23 || zm > 59) return 0;
            zone = sign * (zh * 3600 + zm * 60);
        }
        if (p != e) return 0;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - zone;
    *out = secs * 1000000 + frac;
    return 1;
}

/* iso_micros(offsets, data, where, out, handled): for each string ``where`` marks (a byte per
 * entry), its microseconds when it is a timestamp parse_iso takes; handled says which were. */
static PyObject *iso_micros(PyObject *self, PyObject *args) {
    PyObject *o_off, *o_data, *o_where, *o_out, *o_handled;
    if (!PyArg_ParseTuple(args, "OOOOO", &o_off, &o_data, &o_where, &o_out, &o_handled)) return NULL;
    Py_buffer off, data, where, out, handled;
    if (get(o_off, &off, 0) < 0) return NULL;
    if (get(o_data, &data, 0) < 0) { PyBuffer_Release(&off); return NULL; }
    if (get(o_where, &where, 0) < 0) { PyBuffer_Release(&off); PyBuffer_Release(&data); return NULL; }
    if (get(o_out, &out, 1) < 0) {
        PyBuffer_Release(&off);
        PyBuffer_Release(&data);
        PyBuffer_Release(&where);
        return NULL;
    }
    if (get(o_handled, &handled, 1) < 0) {
        PyBuffer_Release(&off);
        PyBuffer_Release(&data);
        PyBuffer_Release(&where);
        PyBuffer_Release(&out);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = where.len;
    if (off.len != (n + 1) * 8 || out.len != n * 8 || handled.len != n) {
        PyErr_SetString(PyExc_ValueError, "offsets must be n + 1 int64s, out n int64s, where and handled n bytes");
        goto done;
    }
    const unsigned char *base = (const unsigned char *)data.buf;
    const int64_t *offsets = (const int64_t *)off.buf;
    const unsigned char *mask = (const unsigned char *)where.buf;
    int64_t *dst = (int64_t *)out.buf;
    unsigned char *ok = (unsigned char *)handled.buf;
    int bad = offsets[0] < 0 || offsets[n] > data.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && !bad; i++) {
        int64_t a = offsets[i], b = offsets[i + 1];
        if (b < a) { bad = 1; break; }
        dst[i] = 0;
        ok[i] = mask[i] && parse_iso(base + a, base + b, &dst[i]);
    }
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets must be ascending and inside the data");
        goto done;
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    PyBuffer_Release(&where);
    PyBuffer_Release(&out);
    PyBuffer_Release(&handled);
    return result;
}

static PyMethodDef methods[] = {
    {"string_coupons", string_coupons, METH_VARARGS, "Coupons of strings given their offsets and bytes."},
    {"word_coupons", word_coupons, METH_VARARGS, "Coupons of 8-byte values."},
    {"string_stats", string_stats, METH_VARARGS, "Smallest, largest, shortest and longest string."},
    {"hash_partitions", hash_partitions, METH_VARARGS, "Stable partition numbers of strings."},
    {"iso_micros", iso_micros, METH_VARARGS, "Microseconds of the common ISO-8601 timestamps."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_colscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__colscan(void) {
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "_colscan supports little-endian hosts only");
        return NULL;
    }
    return PyModule_Create(&module);
}
