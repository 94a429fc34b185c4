/* Compiled passes over whole Arrow buffers (transforms.colscan), each with an Arrow or numpy
 * twin that gives the same result where this module is not built.
 *
 * - string_coupons, word_coupons: the HLL library's coupons (transforms.quality.hll).
 * - string_stats: smallest and largest string, shortest and longest in characters.
 * - hash_partitions: transforms.records.hash_partition.
 * - iso_micros: the common ISO-8601 timestamps (the rest are left to Arrow's parser).
 * - json_quote: JSON string literals, escaped as orjson and json.dumps escape.
 * - json_rows: rows assembled from columns of JSON value text and the literals between them.
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

static const char hex_digits[] = "0123456789abcdef";

/* Bytes a character takes inside a JSON string literal, less one: 0 for most. */
static unsigned char extra_size[256];

static void init_escapes(void) {
    for (int c = 0; c < 256; c++) extra_size[c] = c < 0x20 ? 5 : 0;
    extra_size['"'] = extra_size['\\'] = 1;
    extra_size['\b'] = extra_size['\t'] = extra_size['\n'] = extra_size['\f'] = extra_size['\r'] = 1;
}

/* Size of the bytes [p, e) escaped (without quotes). */
static inline int64_t escaped_len(const unsigned char *p, const unsigned char *e) {
    int64_t extra = 0;
    for (const unsigned char *q = p; q < e; q++) extra += extra_size[*q];
    return (e - p) + extra;
}

/* Writes the bytes [p, e) escaped to dst (``size`` bytes, from escaped_len); returns the end. */
static inline unsigned char *write_escaped(unsigned char *dst, const unsigned char *p, const unsigned char *e,
                                           int64_t size) {
    if (size == e - p) {
        memcpy(dst, p, (size_t)size);
        return dst + size;
    }
    for (; p < e; p++) {
        unsigned char c = *p;
        switch (extra_size[c]) {
        case 0:
            *dst++ = c;
            break;
        case 1:
            *dst++ = '\\';
            *dst++ = c == '"' ? '"' : c == '\\' ? '\\' : c == '\b' ? 'b' : c == '\t' ? 't' : c == '\n' ? 'n'
                   : c == '\f' ? 'f' : 'r';
            break;
        default:
            memcpy(dst, "\\u00", 4);
            dst[4] = hex_digits[c >> 4];
            dst[5] = hex_digits[c & 15];
            dst += 6;
        }
    }
    return dst;
}

/* json_quote(offsets, data, valid) -> (offsets, data): each string as a quoted, escaped JSON
 * literal (int64 offsets; entries ``valid`` marks false, a byte each, or None for all valid,
 * are left empty). */
static PyObject *json_quote(PyObject *self, PyObject *args) {
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
    PyObject *result = NULL, *out_off = NULL, *out_data = NULL;
    Py_ssize_t n = off.len / 8 - 1;
    const int64_t *offsets = (const int64_t *)off.buf;
    const unsigned char *mask = o_valid == Py_None ? NULL : (const unsigned char *)valid.buf;
    if (off.len % 8 || n < 0 || (mask && valid.len != n)) {
        PyErr_SetString(PyExc_ValueError, "offsets must be n + 1 int64s and valid n bytes");
        goto done;
    }
    const unsigned char *base = (const unsigned char *)data.buf;
    int bad = offsets[0] < 0 || offsets[n] > data.len;
    for (Py_ssize_t i = 0; i < n && !bad; i++) bad = offsets[i + 1] < offsets[i];
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets must be ascending and inside the data");
        goto done;
    }
    out_off = PyByteArray_FromStringAndSize(NULL, (n + 1) * 8);
    if (!out_off) goto done;
    int64_t *dst_off = (int64_t *)PyByteArray_AS_STRING(out_off);
    dst_off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t size = mask && !mask[i] ? 0 : escaped_len(base + offsets[i], base + offsets[i + 1]) + 2;
        dst_off[i + 1] = dst_off[i] + size;
    }
    out_data = PyByteArray_FromStringAndSize(NULL, dst_off[n]);
    if (!out_data) goto done;
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out_data);
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t size = dst_off[i + 1] - dst_off[i];
        if (!size) continue;
        *dst++ = '"';
        dst = write_escaped(dst, base + offsets[i], base + offsets[i + 1], size - 2);
        *dst++ = '"';
    }
    result = PyTuple_Pack(2, out_off, out_data);
done:
    Py_XDECREF(out_off);
    Py_XDECREF(out_data);
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    if (mask) PyBuffer_Release(&valid);
    return result;
}

typedef struct {
    Py_buffer off, data, valid;
    int has_valid, mode; /* 0: text as it is; 1: quoted; 2: escaped and quoted */
} column_t;

/* json_rows(columns, literals) -> (offsets, data): row i is literals[0], the text of column 0
 * at i, literals[1], ... literals[k]. A column is (offsets: n + 1 int64s, data, valid: n bytes
 * or None, mode: 0 for JSON text, 1 for text to quote, 2 for strings to escape and quote); a null
 * value is written as null. */
static PyObject *json_rows(PyObject *self, PyObject *args) {
    PyObject *o_cols, *o_lits;
    if (!PyArg_ParseTuple(args, "OO", &o_cols, &o_lits)) return NULL;
    PyObject *cols = PySequence_Fast(o_cols, "columns must be a sequence");
    if (!cols) return NULL;
    PyObject *lits = PySequence_Fast(o_lits, "literals must be a sequence");
    if (!lits) { Py_DECREF(cols); return NULL; }
    Py_ssize_t k = PySequence_Fast_GET_SIZE(cols), got = 0, n = -1;
    column_t *c = PyMem_Calloc(k ? k : 1, sizeof(column_t));
    PyObject *result = NULL, *out_off = NULL, *out_data = NULL;
    if (!c) { PyErr_NoMemory(); goto done; }
    if (PySequence_Fast_GET_SIZE(lits) != k + 1) {
        PyErr_SetString(PyExc_ValueError, "one literal more than columns is needed");
        goto done;
    }
    for (Py_ssize_t j = 0; j <= k; j++) {
        if (!PyBytes_Check(PySequence_Fast_GET_ITEM(lits, j))) {
            PyErr_SetString(PyExc_TypeError, "literals must be bytes");
            goto done;
        }
    }
    for (; got < k; got++) {
        PyObject *o_off, *o_data, *o_valid;
        int mode;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(cols, got), "OOOi", &o_off, &o_data, &o_valid, &mode)) goto done;
        if (mode < 0 || mode > 2) {
            PyErr_SetString(PyExc_ValueError, "a column's mode is 0, 1 or 2");
            goto done;
        }
        column_t *col = &c[got];
        if (get(o_off, &col->off, 0) < 0) goto done;
        if (get(o_data, &col->data, 0) < 0) { PyBuffer_Release(&col->off); goto done; }
        if (o_valid != Py_None) {
            if (get(o_valid, &col->valid, 0) < 0) {
                PyBuffer_Release(&col->off);
                PyBuffer_Release(&col->data);
                goto done;
            }
            col->has_valid = 1;
        }
        col->mode = mode;
        Py_ssize_t rows = col->off.len / 8 - 1;
        const int64_t *o = (const int64_t *)col->off.buf;
        int bad = col->off.len % 8 || rows < 0 || (n >= 0 && rows != n) || (col->has_valid && col->valid.len != rows);
        if (!bad) {
            bad = o[0] < 0 || o[rows] > col->data.len;
            for (Py_ssize_t i = 0; i < rows && !bad; i++) bad = o[i + 1] < o[i];
        }
        if (bad) {
            got++;
            PyErr_SetString(PyExc_ValueError, "every column needs n + 1 ascending int64 offsets inside its data and n valid bytes");
            goto done;
        }
        n = rows;
    }
    if (n < 0) n = 0;
    int64_t lit_total = 0;
    for (Py_ssize_t j = 0; j <= k; j++) lit_total += PyBytes_GET_SIZE(PySequence_Fast_GET_ITEM(lits, j));
    int64_t total = lit_total * n;
    /* Escaped sizes are kept per value, so the writing pass knows which need escaping. */
    int64_t **sizes = PyMem_Calloc(k ? k : 1, sizeof(int64_t *));
    if (!sizes) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t j = 0; j < k; j++) {
        const int64_t *o = (const int64_t *)c[j].off.buf;
        const unsigned char *v = c[j].has_valid ? (const unsigned char *)c[j].valid.buf : NULL;
        const unsigned char *b = (const unsigned char *)c[j].data.buf;
        if (c[j].mode == 2 && !(sizes[j] = PyMem_Malloc((n ? n : 1) * sizeof(int64_t)))) {
            for (Py_ssize_t q = 0; q < j; q++) PyMem_Free(sizes[q]);
            PyMem_Free(sizes);
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (v && !v[i]) total += 4;
            else if (c[j].mode == 2) total += (sizes[j][i] = escaped_len(b + o[i], b + o[i + 1])) + 2;
            else total += o[i + 1] - o[i] + (c[j].mode == 1 ? 2 : 0);
        }
    }
    out_off = PyByteArray_FromStringAndSize(NULL, (n + 1) * 8);
    out_data = PyByteArray_FromStringAndSize(NULL, total);
    if (!out_off || !out_data) {
        for (Py_ssize_t j = 0; j < k; j++) PyMem_Free(sizes[j]);
        PyMem_Free(sizes);
        goto done;
    }
    int64_t *dst_off = (int64_t *)PyByteArray_AS_STRING(out_off);
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out_data);
    int64_t at = 0;
    dst_off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t j = 0; j <= k; j++) {
            PyObject *lit = PySequence_Fast_GET_ITEM(lits, j);
            memcpy(dst + at, PyBytes_AS_STRING(lit), PyBytes_GET_SIZE(lit));
            at += PyBytes_GET_SIZE(lit);
            if (j == k) break;
            const int64_t *o = (const int64_t *)c[j].off.buf;
            if (c[j].has_valid && !((const unsigned char *)c[j].valid.buf)[i]) {
                memcpy(dst + at, "null", 4);
                at += 4;
                continue;
            }
            const unsigned char *b = (const unsigned char *)c[j].data.buf;
            if (c[j].mode) dst[at++] = '"';
            if (c[j].mode == 2) {
                at = write_escaped(dst + at, b + o[i], b + o[i + 1], sizes[j][i]) - dst;
            } else {
                memcpy(dst + at, b + o[i], o[i + 1] - o[i]);
                at += o[i + 1] - o[i];
            }
            if (c[j].mode) dst[at++] = '"';
        }
        dst_off[i + 1] = at;
    }
    for (Py_ssize_t j = 0; j < k; j++) PyMem_Free(sizes[j]);
    PyMem_Free(sizes);
    result = PyTuple_Pack(2, out_off, out_data);
done:
    Py_XDECREF(out_off);
    Py_XDECREF(out_data);
    for (Py_ssize_t j = 0; j < got; j++) {
        PyBuffer_Release(&c[j].off);
        PyBuffer_Release(&c[j].data);
        if (c[j].has_valid) PyBuffer_Release(&c[j].valid);
    }
    PyMem_Free(c);
    Py_DECREF(cols);
    Py_DECREF(lits);
    return result;
}

static PyMethodDef methods[] = {
    {"string_coupons", string_coupons, METH_VARARGS, "Coupons of strings given their offsets and bytes."},
    {"word_coupons", word_coupons, METH_VARARGS, "Coupons of 8-byte values."},
    {"string_stats", string_stats, METH_VARARGS, "Smallest, largest, shortest and longest string."},
    {"hash_partitions", hash_partitions, METH_VARARGS, "Stable partition numbers of strings."},
    {"iso_micros", iso_micros, METH_VARARGS, "Microseconds of the common ISO-8601 timestamps."},
    {"json_quote", json_quote, METH_VARARGS, "Strings as quoted, escaped JSON literals."},
    {"json_rows", json_rows, METH_VARARGS, "Rows from columns of JSON value text and literals."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_colscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__colscan(void) {
    init_escapes();
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        PyErr_SetString(PyExc_ImportError, "_colscan supports little-endian hosts only");
        return NULL;
    }
    return PyModule_Create(&module);
}
