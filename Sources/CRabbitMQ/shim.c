#include "CRabbitMQ.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

amqp_rpc_reply_t nercc_amqp_login_plain(amqp_connection_state_t state, const char *vhost, int channel_max,
                                        int frame_max, int heartbeat, const amqp_table_t *client_properties,
                                        const char *user, const char *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, client_properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

// rabbitmq-c 0.11 reports every failed connect as AMQP_STATUS_SOCKET_ERROR; when the connect was
// still in progress, the reason (SO_ERROR) is lost with the closed socket. One more non-blocking
// connect, made only after a failure, recovers it (ECONNREFUSED, EHOSTUNREACH, ...).
static int nercc_probe_connect_error(const char *host, int port, const struct timeval *timeout) {
    struct addrinfo hints;
    struct addrinfo *list = NULL;
    char port_text[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port_text, sizeof(port_text), "%d", port);
    if (getaddrinfo(host, port_text, &hints, &list) != 0) {
        return 0;
    }
    int result = 0;
    for (struct addrinfo *address = list; address != NULL; address = address->ai_next) {
        int descriptor = socket(address->ai_family, address->ai_socktype, address->ai_protocol);
        if (descriptor < 0) {
            continue;
        }
        int error = 0;
        fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK);
        if (connect(descriptor, address->ai_addr, address->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                error = errno;
            } else {
                struct pollfd poller = {descriptor, POLLOUT, 0};
                int milliseconds = timeout == NULL ? -1 : (int)(timeout->tv_sec * 1000 + timeout->tv_usec / 1000);
                int ready = poll(&poller, 1, milliseconds);
                if (ready == 0) {
                    error = ETIMEDOUT;
                } else if (ready < 0) {
                    error = errno;
                } else {
                    socklen_t length = sizeof(error);
                    getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length);
                }
            }
        }
        close(descriptor);
        result = error;
        if (error == 0) {
            break;
        }
    }
    freeaddrinfo(list);
    return result;
}

int nercc_amqp_socket_open(amqp_socket_t *socket, const char *host, int port, const struct timeval *timeout,
                           int *os_error) {
    errno = 0;
    int status = amqp_socket_open_noblock(socket, host, port, timeout);
    int error = status == AMQP_STATUS_OK ? 0 : errno;
    if (status == AMQP_STATUS_SOCKET_ERROR && (error == 0 || error == EINPROGRESS)) {
        error = nercc_probe_connect_error(host, port, timeout);
    }
    if (os_error != NULL) {
        *os_error = error;
    }
    return status;
}

int nercc_amqp_ssl_use_default_verify_paths(amqp_socket_t *socket) {
    typedef int (*set_default_verify_paths_fn)(void *);
    void *context = amqp_ssl_socket_get_context(socket);
    if (context == NULL) {
        return -1;
    }
    set_default_verify_paths_fn function =
        (set_default_verify_paths_fn)dlsym(RTLD_DEFAULT, "SSL_CTX_set_default_verify_paths");
    if (function == NULL) {
        return -1;
    }
    return function(context) == 1 ? 1 : 0;
}
