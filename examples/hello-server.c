/*
 * hello-server: an HTTP/1.1 server that answers every request with the
 * 13-byte body "Hello, World!".
 *
 *   hello-server [--port P] [--loops N]
 *
 * Keep-alive and pipelining: a connection's requests are answered in
 * order, responses to requests that arrived together go out in one write.
 * One accept loop per corio loop (SO_REUSEPORT), each connection a task
 * on the loop that accepted it. "Connection: close", or HTTP/1.0 without
 * "Connection: keep-alive", closes after the response. Requests may carry
 * a Content-Length body, which is read and ignored. Runs until SIGINT or
 * SIGTERM, then says so and exits 0 (corio_signal_wait, accept_loops.h);
 * exits 1 if it cannot listen, or accept fails for good. --port 0: any
 * free port, which the "listening" line names.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "corio.h"
#include "accept_loops.h"
#include "example_args.h"

static const uint16_t default_port = 8080;

static const char response[] = "HTTP/1.1 200 OK\r\n"
                               "Server: corio\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 13\r\n"
                               "\r\n"
                               "Hello, World!";
static const char response_close[] = "HTTP/1.1 200 OK\r\n"
                                     "Server: corio\r\n"
                                     "Content-Type: text/plain\r\n"
                                     "Content-Length: 13\r\n"
                                     "Connection: close\r\n"
                                     "\r\n"
                                     "Hello, World!";
static const char bad_request[] = "HTTP/1.1 400 Bad Request\r\n"
                                  "Content-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";

/* The value of header `name` within [headers, end), or NULL. */
static const char *header(const char *headers, const char *end, const char *name, size_t *len)
{
    size_t nlen = strlen(name);
    for (const char *line = headers; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && isspace((unsigned char)ve[-1]))
                ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        line = eol + 1;
    }
    return NULL;
}

/* Parse one request head of `head_len` bytes. Returns the body length
 * (>= 0) or -1 for a malformed request; *keep_alive says whether the
 * connection stays open. */
static long parse_request(const char *req, size_t head_len, int *keep_alive)
{
    const char *end = req + head_len;
    const char *eol = memchr(req, '\n', head_len);
    if (!eol)
        return -1;
    /* "METHOD SP target SP HTTP/1.x" */
    const char *version = NULL;
    for (const char *p = eol; p > req; p--)
        if (p[-1] == ' ') {
            version = p;
            break;
        }
    if (!version || eol - version < 8 || strncmp(version, "HTTP/1.", 7) != 0)
        return -1;
    int http10 = version[7] == '0';
    size_t vlen;
    const char *conn = header(eol + 1, end, "Connection", &vlen);
    if (conn && vlen == 5 && strncasecmp(conn, "close", 5) == 0)
        *keep_alive = 0;
    else if (conn && vlen == 10 && strncasecmp(conn, "keep-alive", 10) == 0)
        *keep_alive = 1;
    else
        *keep_alive = !http10;
    const char *cl = header(eol + 1, end, "Content-Length", &vlen);
    if (!cl)
        return 0;
    char num[24];
    if (vlen == 0 || vlen >= sizeof num)
        return -1;
    memcpy(num, cl, vlen);
    num[vlen] = '\0';
    /* Digits only (no sign or blank, which strtol would take), and within
     * a long: strtol saturates an overflow to LONG_MAX. */
    if (!isdigit((unsigned char)num[0]))
        return -1;
    char *stop;
    errno = 0;
    long body = strtol(num, &stop, 10);
    return (*stop || errno == ERANGE || body < 0) ? -1 : body;
}

/* Length of the request head at the start of [p, p + len): up to and
 * including the empty line that ends it, or 0 if it has not all arrived.
 * Lines may end in a bare LF, which RFC 9112 (2.2) lets a server accept
 * (curl never sends one; hand-typed requests do). */
static size_t head_length(const char *p, size_t len)
{
    for (const char *nl = p; (nl = memchr(nl, '\n', len - (size_t)(nl - p)));) {
        const char *next = nl + 1;
        if (next < p + len && *next == '\r')
            next++;
        if (next >= p + len)
            return 0;
        if (*next == '\n')
            return (size_t)(next - p) + 1;
        nl++;
    }
    return 0;
}

#define BUF_SIZE 16384
#define OUT_SIZE (64 * sizeof response_close)

static void *serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(BUF_SIZE), *out = malloc(OUT_SIZE);
    size_t have = 0;
    long skip = 0; /* body bytes still to discard */
    int open = buf && out;
    while (open) {
        ssize_t n = corio_read(fd, buf + have, BUF_SIZE - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        size_t used = 0, out_len = 0;
        for (;;) {
            if (skip) {
                size_t take = have - used < (size_t)skip ? have - used : (size_t)skip;
                used += take;
                skip -= (long)take;
                if (skip)
                    break;
            }
            char *start = buf + used;
            size_t head_len = head_length(start, have - used);
            if (!head_len) {
                if (have - used == BUF_SIZE) { /* a head bigger than the buffer */
                    corio_write(fd, bad_request, sizeof bad_request - 1);
                    open = 0;
                }
                break;
            }
            int keep_alive;
            long body = parse_request(start, head_len, &keep_alive);
            if (body < 0) {
                corio_write(fd, bad_request, sizeof bad_request - 1);
                open = 0;
                break;
            }
            used += head_len;
            skip = body;
            const char *r = keep_alive ? response : response_close;
            size_t rlen = (keep_alive ? sizeof response : sizeof response_close) - 1;
            if (out_len + rlen > OUT_SIZE) {
                if (corio_write(fd, out, out_len) < 0) {
                    open = 0;
                    break;
                }
                out_len = 0;
            }
            memcpy(out + out_len, r, rlen);
            out_len += rlen;
            if (!keep_alive) {
                open = 0;
                break;
            }
        }
        if (out_len && corio_write(fd, out, out_len) < 0)
            open = 0;
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    corio_close(fd);
    free(buf);
    free(out);
    return NULL;
}

int main(int argc, char **argv)
{
    corio_config cfg;
    corio_config_init(&cfg);
    struct server server = {"hello-server", default_port, serve_connection};
    struct example_arg args[] = {
        {"--port", &server.port, ARG_PORT, 0},
        {"--loops", &cfg.loops, ARG_LOOPS, 0},
    };
    parse_example_args("hello-server", argc, argv, args, sizeof args / sizeof args[0]);
    block_stop_signals(); /* before the runtime's threads, which inherit the mask */
    void *failed = NULL; /* run_server's failure, having said why */
    int rc = corio_run(&cfg, run_server, &server, &failed);
    if (rc != 0) {
        fprintf(stderr, "hello-server: %s\n", corio_strerror(rc));
        return 1;
    }
    return failed ? 1 : 0;
}
