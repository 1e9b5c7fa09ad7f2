/*
 * sigfmt.h: one line of text built by hand, for code that runs in a
 * signal handler (the watchdog's dump, debug.c; the overflow report,
 * overflow.c).
 *
 * The printf family is not async-signal-safe (signal-safety(7)): glibc's
 * may take the locale's lock or malloc (wide strings, floating point,
 * positional arguments), and a handler that lands while its own thread
 * is inside malloc or holds that lock deadlocks or corrupts the heap.
 * These append the few forms the handlers print (strings, decimals,
 * hex) into a caller's buffer with nothing but loads and stores.
 *
 * A line longer than its buffer is cut at cap - 1 bytes, as snprintf
 * would cut it; the last byte is never written, so a cut line is never
 * mistaken for a full one by its length alone.
 */
#ifndef CORIO_SIGFMT_H
#define CORIO_SIGFMT_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

typedef struct corio__sigfmt {
    char *buf;
    size_t cap; /* bytes at buf; at most cap - 1 are used */
    size_t len;
} corio__sigfmt;

static inline corio__sigfmt corio__sigfmt_on(char *buf, size_t cap)
{
    return (corio__sigfmt){buf, cap, 0};
}

static inline void corio__sigfmt_char(corio__sigfmt *f, char c)
{
    if (f->len + 1 < f->cap)
        f->buf[f->len++] = c;
}

static inline void corio__sigfmt_str(corio__sigfmt *f, const char *s)
{
    while (*s)
        corio__sigfmt_char(f, *s++);
}

/* Decimal, as %llu / %zu / %u. */
static inline void corio__sigfmt_u64(corio__sigfmt *f, uint64_t v)
{
    char tmp[20]; /* 18446744073709551615 */
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        corio__sigfmt_char(f, tmp[--n]);
}

/* Decimal with a sign, as %lld / %d (INT64_MIN included: its magnitude
 * is taken in unsigned arithmetic, where it does not overflow). */
static inline void corio__sigfmt_i64(corio__sigfmt *f, int64_t v)
{
    if (v < 0) {
        corio__sigfmt_char(f, '-');
        corio__sigfmt_u64(f, 0 - (uint64_t)v);
    } else {
        corio__sigfmt_u64(f, (uint64_t)v);
    }
}

/* Lower-case hex without a prefix, as %x / %llx. */
static inline void corio__sigfmt_hex(corio__sigfmt *f, uint64_t v)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        corio__sigfmt_char(f, tmp[--n]);
}

/* Write the line to fd, all of it unless fd fails (a pipe may take part
 * of it, a signal may interrupt it). errno is left as it was: a handler
 * must not change what the code it interrupted is about to read. */
static inline void corio__sigfmt_write(int fd, const corio__sigfmt *f)
{
    int saved = errno;
    for (size_t done = 0; done < f->len;) {
        ssize_t w = write(fd, f->buf + done, f->len - done);
        if (w > 0)
            done += (size_t)w;
        else if (w < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    errno = saved;
}

#endif /* CORIO_SIGFMT_H */
