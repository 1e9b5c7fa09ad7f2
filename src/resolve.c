/*
 * resolve.c: names and addresses: getaddrinfo on the blocking pool,
 * listeners, and "connect to this host" in one call.
 *
 * getaddrinfo may block for seconds (DNS), so it runs on the blocking
 * pool and only the asking task waits. Its EAI_* failures are mapped onto
 * corio's three resolver errors (bad hints onto CORIO_EINVAL, an unknown
 * family onto CORIO_EAFNOSUPPORT) so callers need no second error space.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "blocking.h"
#include "corio.h"
#include "sys.h"

static int map_eai(int eai)
{
    switch (eai) {
    case 0: return 0;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: /* the host exists, with no address of that family */
#endif
    case EAI_SERVICE: return CORIO_ENONAME;
    case EAI_BADFLAGS:
    case EAI_SOCKTYPE: return CORIO_EINVAL; /* the hints, not the name */
    case EAI_AGAIN: return CORIO_ENAMETEMP;
    case EAI_MEMORY: return CORIO_ENOMEM;
    case EAI_SYSTEM: return errno ? -errno : CORIO_ENAMEFAIL;
    case EAI_FAMILY: return CORIO_EAFNOSUPPORT;
    default: return CORIO_ENAMEFAIL;
    }
}

/* One lookup, owning copies of its inputs: it runs on a pool thread and
 * may outlive a caller that gave up waiting. */
struct gai_call {
    char *node, *service;
    struct addrinfo hints;
    bool has_hints;
    struct addrinfo *res;
    int rc;
};

static void gai_call_free(struct gai_call *c)
{
    corio__free(c->node);
    corio__free(c->service);
    corio__free(c);
}

static void gai_abandoned(void *arg)
{
    struct gai_call *c = arg;
    if (c->res)
        freeaddrinfo(c->res);
    gai_call_free(c);
}

static void *gai_on_pool(void *arg)
{
    struct gai_call *c = arg;
    c->rc = map_eai(getaddrinfo(c->node, c->service, c->has_hints ? &c->hints : NULL, &c->res));
    return NULL;
}

static char *copy_string(const char *s, bool *failed)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *copy = corio__malloc(n);
    if (!copy)
        *failed = true;
    else
        memcpy(copy, s, n);
    return copy;
}

int corio_getaddrinfo_until(const char *node, const char *service, const struct addrinfo *hints,
                            struct addrinfo **res, corio_time_t deadline)
{
    if (!res)
        return CORIO_EINVAL;
    *res = NULL;
    struct gai_call *c = corio__calloc(1, sizeof *c);
    if (!c)
        return CORIO_ENOMEM;
    bool failed = false;
    c->node = copy_string(node, &failed);
    c->service = copy_string(service, &failed);
    if (failed) {
        gai_call_free(c);
        return CORIO_ENOMEM;
    }
    if (hints) {
        c->has_hints = true;
        c->hints.ai_flags = hints->ai_flags;
        c->hints.ai_family = hints->ai_family;
        c->hints.ai_socktype = hints->ai_socktype;
        c->hints.ai_protocol = hints->ai_protocol;
    }
    int rc = corio__run_blocking_owned(gai_on_pool, c, gai_abandoned, NULL, deadline);
    if (rc != 0)
        return rc; /* c has passed to the pool, which frees it */
    *res = c->res;
    rc = c->rc;
    gai_call_free(c);
    return rc;
}

int corio_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                      struct addrinfo **res)
{
    return corio_getaddrinfo_until(node, service, hints, res, CORIO_FOREVER);
}

int corio_connect_tcp(const char *host, uint16_t port, corio_time_t deadline)
{
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG};
    struct addrinfo *res;
    int rc = corio_getaddrinfo_until(host, service, &hints, &res, deadline);
    if (rc != 0)
        return rc;
    rc = CORIO_ENONAME;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = corio_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            rc = fd;
            continue;
        }
        rc = corio_connect_until(fd, ai->ai_addr, ai->ai_addrlen, deadline);
        if (rc == 0) {
            freeaddrinfo(res);
            return fd;
        }
        corio_close(fd);
        if (rc == CORIO_ETIMEDOUT || rc == CORIO_ECANCELED)
            break;
    }
    freeaddrinfo(res);
    return rc;
}

/* Parse a numeric address (NULL: IPv4 any) into *ss. */
static int numeric_addr(const char *host, uint16_t port, struct sockaddr_storage *ss,
                        socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (!host || !*host) {
        in4->sin_family = AF_INET;
        in4->sin_addr.s_addr = htonl(INADDR_ANY);
        in4->sin_port = htons(port);
        *len = sizeof *in4;
        return 0;
    }
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *len = sizeof *in4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof *in6;
        return 0;
    }
    return CORIO_EINVAL;
}

static int bound_socket(const char *host, uint16_t port, int type, unsigned flags)
{
    if (flags & ~(unsigned)CORIO_LISTEN_REUSEPORT)
        return CORIO_EINVAL;
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = numeric_addr(host, port, &ss, &len);
    if (rc != 0)
        return rc;
    int fd = corio_socket(ss.ss_family, type, 0);
    if (fd < 0)
        return fd;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        ((flags & CORIO_LISTEN_REUSEPORT) &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
        bind(fd, (struct sockaddr *)&ss, len) != 0) {
        rc = -errno;
        corio_close(fd);
        return rc;
    }
    return fd;
}

int corio_listen_tcp(const char *host, uint16_t port, int backlog, unsigned flags)
{
    int fd = bound_socket(host, port, SOCK_STREAM, flags);
    if (fd < 0)
        return fd;
    if (listen(fd, backlog > 0 ? backlog : SOMAXCONN) != 0) {
        int rc = -errno;
        corio_close(fd);
        return rc;
    }
    return fd;
}

int corio_bind_udp(const char *host, uint16_t port, unsigned flags)
{
    return bound_socket(host, port, SOCK_DGRAM, flags);
}

int corio_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return CORIO_EAFNOSUPPORT;
}
