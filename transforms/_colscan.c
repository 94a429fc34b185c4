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

/* A string column: n + 1 ascending int64 offsets into its bytes, checked once on the way in. */
typedef struct {
    Py_buffer off, data;
    Py_ssize_t n;
    const int64_t *at;
    const unsigned char *bytes;
} strings_t;

static int get_strings(PyObject *o_off, PyObject *o_data, strings_t *s) {
    if (PyObject_GetBuffer(o_off, &s->off, PyBUF_SIMPLE) < 0) return -1;
    if (PyObject_GetBuffer(o_data, &s->data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&s->off);
        return -1;
    }
    s->n = s->off.len / 8 - 1;
    s->at = (const int64_t *)s->off.buf;
    s->bytes = (const unsigned char *)s->data.buf;
    int bad = s->off.len % 8 || s->n < 0 || s->at[0] < 0 || s->at[s->n] > s->data.len;
    for (Py_ssize_t i = 0; i < s->n && !bad; i++) bad = s->at[i + 1] < s->at[i];
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "offsets must be n + 1 ascending int64s inside the data");
        PyBuffer_Release(&s->off);
        PyBuffer_Release(&s->data);
        return -1;
    }
    return 0;
}

static void release_strings(strings_t *s) {
    PyBuffer_Release(&s->off);
    PyBuffer_Release(&s->data);
}

/* A buffer of exactly ``size`` bytes (writable when asked); ``what`` names it in the error. */
static int get_sized(PyObject *obj, Py_ssize_t size, int writable, Py_buffer *view, const char *what) {
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) return -1;
    if (view->len != size) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd bytes, not %zd", what, size, view->len);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* An optional mask of n bytes (None: every entry); *mask is NULL for None. */
static int get_mask(PyObject *obj, Py_ssize_t n, Py_buffer *view, const unsigned char **mask) {
    *mask = NULL;
    if (obj == Py_None) return 0;
    if (get_sized(obj, n, 0, view, "a mask") < 0) return -1;
    *mask = (const unsigned char *)view->buf;
    return 0;
}

/* The arguments (offsets, data, valid) of a pass over a column's strings and their mask. */
static int get_masked_strings(PyObject *args, strings_t *s, Py_buffer *valid, const unsigned char **mask) {
    PyObject *o_off, *o_data, *o_valid;
    if (!PyArg_ParseTuple(args, "OOO", &o_off, &o_data, &o_valid) || get_strings(o_off, o_data, s) < 0) return -1;
    if (get_mask(o_valid, s->n, valid, mask) < 0) {
        release_strings(s);
        return -1;
    }
    return 0;
}

/* string_coupons(offsets, data, out): coupons of n strings (out: n uint64s); empty strings get 0. */
static PyObject *string_coupons(PyObject *self, PyObject *args) {
    PyObject *o_off, *o_data, *o_out;
    strings_t s;
    Py_buffer out;
    if (!PyArg_ParseTuple(args, "OOO", &o_off, &o_data, &o_out) || get_strings(o_off, o_data, &s) < 0) return NULL;
    if (get_sized(o_out, s.n * 8, 1, &out, "out") < 0) {
        release_strings(&s);
        return NULL;
    }
    uint64_t *dst = (uint64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < s.n; i++) {
        int64_t a = s.at[i], b = s.at[i + 1];
        dst[i] = b > a ? coupon(s.bytes + a, (size_t)(b - a)) : 0;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    release_strings(&s);
    Py_RETURN_NONE;
}

/* word_coupons(words, out): coupons of 8-byte values (int64, or a double's bits). */
static PyObject *word_coupons(PyObject *self, PyObject *args) {
    PyObject *o_in, *o_out;
    Py_buffer in, out;
    if (!PyArg_ParseTuple(args, "OO", &o_in, &o_out) || PyObject_GetBuffer(o_in, &in, PyBUF_SIMPLE) < 0) return NULL;
    if (in.len % 8) {
        PyErr_SetString(PyExc_ValueError, "words must hold 8 bytes per value");
        PyBuffer_Release(&in);
        return NULL;
    }
    if (get_sized(o_out, in.len, 1, &out, "out") < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    const unsigned char *src = (const unsigned char *)in.buf;
    uint64_t *dst = (uint64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < in.len / 8; i++) dst[i] = coupon(src + 8 * i, 8);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
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
    strings_t s;
    Py_buffer valid;
    const unsigned char *mask;
    if (get_masked_strings(args, &s, &valid, &mask) < 0) return NULL;
    Py_ssize_t lo = -1, hi = -1;
    int64_t fewest = 0, most = 0;
    const int64_t *at = s.at;
    const unsigned char *base = s.bytes;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < s.n; i++) {
        if (mask && !mask[i]) continue;
        int64_t a = at[i], b = at[i + 1], c = chars(base + a, b - a);
        if (lo < 0) {
            lo = hi = i;
            fewest = most = c;
            continue;
        }
        if (c < fewest) fewest = c;
        if (c > most) most = c;
        if (less(base + a, b - a, base + at[lo], at[lo + 1] - at[lo])) lo = i;
        else if (less(base + at[hi], at[hi + 1] - at[hi], base + a, b - a)) hi = i;
    }
    Py_END_ALLOW_THREADS
    if (mask) PyBuffer_Release(&valid);
    release_strings(&s);
    if (lo < 0) Py_RETURN_NONE;
    return Py_BuildValue("nnLL", lo, hi, (long long)fewest, (long long)most);
}

/* hash_partitions(offsets, data, weights, partitions, out): each string's partition (out: n
 * int64s), from the sum over its bytes of (byte + 1) * weights[position % 256] (modulo 2**64),
 * mixed. */
static PyObject *hash_partitions(PyObject *self, PyObject *args) {
    PyObject *o_off, *o_data, *o_w, *o_out;
    unsigned long long partitions;
    strings_t s;
    Py_buffer w, out;
    if (!PyArg_ParseTuple(args, "OOOKO", &o_off, &o_data, &o_w, &partitions, &o_out)) return NULL;
    if (partitions < 1 || partitions > INT64_MAX) {
        PyErr_SetString(PyExc_ValueError, "partitions must be in [1, 2**63)");
        return NULL;
    }
    if (get_strings(o_off, o_data, &s) < 0) return NULL;
    if (get_sized(o_w, 256 * 8, 0, &w, "weights") < 0) {
        release_strings(&s);
        return NULL;
    }
    if (get_sized(o_out, s.n * 8, 1, &out, "out") < 0) {
        PyBuffer_Release(&w);
        release_strings(&s);
        return NULL;
    }
    const uint64_t *weights = (const uint64_t *)w.buf;
    int64_t *dst = (int64_t *)out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < s.n; i++) {
        const unsigned char *p = s.bytes + s.at[i];
        uint64_t h = 0;
        for (int64_t j = 0; j < s.at[i + 1] - s.at[i]; j++) h += ((uint64_t)p[j] + 1) * weights[j & 255];
        h ^= h >> 31;
        h *= 0x9e3779b97f4a7c15ULL;
        h ^= h >> 29;
        dst[i] = (int64_t)(h % partitions);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&w);
    PyBuffer_Release(&out);
    release_strings(&s);
    Py_RETURN_NONE;
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

/* iso_micros(offsets, data, where, out, handled): for each string ``where`` marks (n bytes),
 * its microseconds (out: n int64s) when it is a timestamp parse_iso takes; handled (n bytes)
 * says which were. */
static PyObject *iso_micros(PyObject *self, PyObject *args) {
    PyObject *o_off, *o_data, *o_where, *o_out, *o_handled;
    strings_t s;
    Py_buffer where, out, handled;
    if (!PyArg_ParseTuple(args, "OOOOO", &o_off, &o_data, &o_where, &o_out, &o_handled)) return NULL;
    if (get_strings(o_off, o_data, &s) < 0) return NULL;
    if (get_sized(o_where, s.n, 0, &where, "where") < 0) {
        release_strings(&s);
        return NULL;
    }
    if (get_sized(o_out, s.n * 8, 1, &out, "out") < 0) {
        PyBuffer_Release(&where);
        release_strings(&s);
        return NULL;
    }
    if (get_sized(o_handled, s.n, 1, &handled, "handled") < 0) {
        PyBuffer_Release(&out);
        PyBuffer_Release(&where);
        release_strings(&s);
        return NULL;
    }
    const unsigned char *mask = (const unsigned char *)where.buf;
    int64_t *dst = (int64_t *)out.buf;
    unsigned char *ok = (unsigned char *)handled.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < s.n; i++) {
        dst[i] = 0;
        ok[i] = mask[i] && parse_iso(s.bytes + s.at[i], s.bytes + s.at[i + 1], &dst[i]);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&handled);
    PyBuffer_Release(&out);
    PyBuffer_Release(&where);
    release_strings(&s);
    Py_RETURN_NONE;
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
    PyObject *out_off = NULL, *out_data = NULL, *result = NULL;
    strings_t s;
    Py_buffer valid;
    const unsigned char *mask;
    if (get_masked_strings(args, &s, &valid, &mask) < 0) return NULL;
    out_off = PyByteArray_FromStringAndSize(NULL, (s.n + 1) * 8);
    if (!out_off) goto done;
    int64_t *dst_off = (int64_t *)PyByteArray_AS_STRING(out_off);
    dst_off[0] = 0;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        int64_t size = mask && !mask[i] ? 0 : escaped_len(s.bytes + s.at[i], s.bytes + s.at[i + 1]) + 2;
        dst_off[i + 1] = dst_off[i] + size;
    }
    out_data = PyByteArray_FromStringAndSize(NULL, dst_off[s.n]);
    if (!out_data) goto done;
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out_data);
    for (Py_ssize_t i = 0; i < s.n; i++) {
        int64_t size = dst_off[i + 1] - dst_off[i];
        if (!size) continue;
        *dst++ = '"';
        dst = write_escaped(dst, s.bytes + s.at[i], s.bytes + s.at[i + 1], size - 2);
        *dst++ = '"';
    }
    result = PyTuple_Pack(2, out_off, out_data);
done:
    Py_XDECREF(out_off);
    Py_XDECREF(out_data);
    if (mask) PyBuffer_Release(&valid);
    release_strings(&s);
    return result;
}

typedef struct {
    strings_t text;
    Py_buffer valid;
    const unsigned char *mask;
    int mode; /* 0: text as it is; 1: quoted; 2: escaped and quoted */
} column_t;

/* json_rows(columns, literals) -> (offsets, data): row i is literals[0], the text of column 0
 * at i, literals[1], ... literals[k]. A column is (offsets, data, valid: n bytes or None, mode:
 * 0 for JSON text, 1 for text to quote, 2 for strings to escape and quote); a null value is
 * written as null. */
static PyObject *json_rows(PyObject *self, PyObject *args) {
    PyObject *o_cols, *o_lits, *cols = NULL, *lits = NULL, *out_off = NULL, *out_data = NULL, *result = NULL;
    column_t *c = NULL;
    int64_t **sizes = NULL;
    Py_ssize_t k = 0, got = 0, n = 0;
    if (!PyArg_ParseTuple(args, "OO", &o_cols, &o_lits)) return NULL;
    if (!(cols = PySequence_Fast(o_cols, "columns must be a sequence"))) goto done;
    if (!(lits = PySequence_Fast(o_lits, "literals must be a sequence"))) goto done;
    k = PySequence_Fast_GET_SIZE(cols);
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
    c = PyMem_Calloc(k ? k : 1, sizeof(column_t));
    sizes = PyMem_Calloc(k ? k : 1, sizeof(int64_t *));
    if (!c || !sizes) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < k; got++) {
        PyObject *o_off, *o_data, *o_valid;
        column_t *col = &c[got];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(cols, got), "OOOi", &o_off, &o_data, &o_valid, &col->mode)) {
            goto done;
        }
        if (col->mode < 0 || col->mode > 2) {
            PyErr_SetString(PyExc_ValueError, "a column's mode is 0, 1 or 2");
            goto done;
        }
        if (get_strings(o_off, o_data, &col->text) < 0) goto done;
        if ((got && col->text.n != n) || get_mask(o_valid, col->text.n, &col->valid, &col->mask) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "every column needs the same rows");
            release_strings(&col->text);
            goto done;
        }
        n = col->text.n;
    }
    int64_t total = 0;
    for (Py_ssize_t j = 0; j <= k; j++) total += n * PyBytes_GET_SIZE(PySequence_Fast_GET_ITEM(lits, j));
    /* Escaped sizes are kept per value, so the writing pass knows which need escaping. */
    for (Py_ssize_t j = 0; j < k; j++) {
        const strings_t *t = &c[j].text;
        if (c[j].mode == 2 && !(sizes[j] = PyMem_Malloc((n ? n : 1) * sizeof(int64_t)))) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (c[j].mask && !c[j].mask[i]) total += 4;
            else if (c[j].mode == 2) total += (sizes[j][i] = escaped_len(t->bytes + t->at[i], t->bytes + t->at[i + 1])) + 2;
            else total += t->at[i + 1] - t->at[i] + (c[j].mode == 1 ? 2 : 0);
        }
    }
    out_off = PyByteArray_FromStringAndSize(NULL, (n + 1) * 8);
    out_data = PyByteArray_FromStringAndSize(NULL, total);
    if (!out_off || !out_data) goto done;
    int64_t *dst_off = (int64_t *)PyByteArray_AS_STRING(out_off);
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out_data), *at = dst;
    dst_off[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t j = 0; j <= k; j++) {
            PyObject *lit = PySequence_Fast_GET_ITEM(lits, j);
            memcpy(at, PyBytes_AS_STRING(lit), PyBytes_GET_SIZE(lit));
            at += PyBytes_GET_SIZE(lit);
            if (j == k) break;
            const strings_t *t = &c[j].text;
            if (c[j].mask && !c[j].mask[i]) {
                memcpy(at, "null", 4);
                at += 4;
                continue;
            }
            const unsigned char *p = t->bytes + t->at[i], *e = t->bytes + t->at[i + 1];
            if (c[j].mode) *at++ = '"';
            if (c[j].mode == 2) {
                at = write_escaped(at, p, e, sizes[j][i]);
            } else {
                memcpy(at, p, (size_t)(e - p));
                at += e - p;
            }
            if (c[j].mode) *at++ = '"';
        }
        dst_off[i + 1] = at - dst;
    }
    result = PyTuple_Pack(2, out_off, out_data);
done:
    Py_XDECREF(out_off);
    Py_XDECREF(out_data);
    for (Py_ssize_t j = 0; j < got; j++) {
        release_strings(&c[j].text);
        if (c[j].mask) PyBuffer_Release(&c[j].valid);
    }
    for (Py_ssize_t j = 0; sizes && j < k; j++) PyMem_Free(sizes[j]);
    PyMem_Free(sizes);
    PyMem_Free(c);
    Py_XDECREF(cols);
    Py_XDECREF(lits);
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
