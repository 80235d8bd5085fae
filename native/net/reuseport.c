// A TCP socket bound with SO_REUSEPORT, for the SMTP workers of a multi-process `facteur serve`: each worker binds its
// own socket to the same address, and the kernel spreads new connections over them (by a hash of the client's address
// and port), so no process hands connections to another. Node 20 cannot set SO_REUSEPORT itself (net.Server's
// reusePort came in Node 22.12), so this makes the socket and returns its descriptor; Node then listens on it (a
// tcp_wrap handle opened on the descriptor). Only the socket is made here: no listen(), no accept(), no I/O.
// Trusts its caller (src/smtp/reuseport.ts): the address is a numeric IPv4 or IPv6 literal, checked there.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char NOT_NUMERIC[] = "bind(host, port, reusePort): host is not a numeric IPv4 or IPv6 address";

static napi_value throw_errno(napi_env env, const char *syscall, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", syscall, strerror(err));
  napi_value code, text, error;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_int32(env, err, &code);
  napi_create_error(env, NULL, text, &error);
  napi_set_named_property(env, error, "errno", code);
  napi_throw(env, error);
  return NULL;
}

/* bind(host, port, reusePort) → fd: a non-blocking, close-on-exec stream socket with SO_REUSEADDR (as libuv sets for
 * a listener: a restart is not refused for connections in TIME_WAIT) and, when reusePort, SO_REUSEPORT; bound. Without
 * SO_REUSEPORT the bind fails with EADDRINUSE when any socket listens on the address: the primary's check. */
static napi_value js_bind(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char host[64];
  size_t hlen = 0;
  int32_t port = -1;
  bool reuse_port = false;
  if (argc < 3 || napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hlen) != napi_ok ||
      napi_get_value_int32(env, argv[1], &port) != napi_ok || port < 0 || port > 65535 ||
      napi_get_value_bool(env, argv[2], &reuse_port) != napi_ok) {
    napi_throw_type_error(env, NULL, "bind(host, port, reusePort): a numeric address, a port and a boolean");
    return NULL;
  }
  /* Cut at the buffer's end or at an embedded NUL: not the address the caller gave. */
  if (hlen >= sizeof host - 1 || strlen(host) != hlen) {
    napi_throw_type_error(env, NULL, NOT_NUMERIC);
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t slen;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    slen = sizeof *a4;
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    slen = sizeof *a6;
  } else {
    napi_throw_type_error(env, NULL, NOT_NUMERIC);
    return NULL;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
      (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0)) {
    int e = errno;
    close(fd);
    return throw_errno(env, "setsockopt", e);
  }
  /* An IPv6 address is dual-stack or not as the system's default says (net.ipv6.bindv6only), as with Node's listen(). */
  if (bind(fd, (struct sockaddr *)&ss, slen) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

/* The one argument of boundPort and close, a descriptor; false (a TypeError thrown, naming `usage`) when it is not one. */
static bool fd_argument(napi_env env, napi_callback_info info, const char *usage, int32_t *fd) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], fd) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return false;
  }
  return true;
}

/* boundPort(fd) → the port the socket is bound to (for port 0). */
static napi_value js_bound_port(napi_env env, napi_callback_info info) {
  int32_t fd = -1;
  if (!fd_argument(env, info, "boundPort(fd)", &fd)) return NULL;
  struct sockaddr_storage ss;
  socklen_t slen = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &slen) < 0) return throw_errno(env, "getsockname", errno);
  int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  napi_value out;
  napi_create_int32(env, port, &out);
  return out;
}

/* close(fd): for a socket that was bound but never given to Node. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  int32_t fd = -1;
  if (!fd_argument(env, info, "close(fd)", &fd)) return NULL;
  if (fd >= 0) close(fd);
  return NULL;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  napi_create_function(env, "bind", NAPI_AUTO_LENGTH, js_bind, NULL, &fn);
  napi_set_named_property(env, exports, "bind", fn);
  napi_create_function(env, "boundPort", NAPI_AUTO_LENGTH, js_bound_port, NULL, &fn);
  napi_set_named_property(env, exports, "boundPort", fn);
  napi_create_function(env, "close", NAPI_AUTO_LENGTH, js_close, NULL, &fn);
  napi_set_named_property(env, exports, "close", fn);
  return exports;
}
