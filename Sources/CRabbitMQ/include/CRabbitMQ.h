#ifndef NERCC_CRABBITMQ_H
#define NERCC_CRABBITMQ_H
// rabbitmq-c 0.11 (Debian librabbitmq-dev: flat headers) plus shims for what Swift cannot call.
//
// Only the RabbitMQMessaging module imports this target, and only from its dedicated I/O thread:
// rabbitmq-c connection objects are not thread-safe.
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <stdint.h>
#include <sys/time.h>

// Method numbers. The header defines them as macros with casts, which Swift does not import.
static const amqp_method_number_t NERCC_AMQP_CONNECTION_CLOSE = AMQP_CONNECTION_CLOSE_METHOD;
static const amqp_method_number_t NERCC_AMQP_CONNECTION_CLOSE_OK = AMQP_CONNECTION_CLOSE_OK_METHOD;
static const amqp_method_number_t NERCC_AMQP_CONNECTION_BLOCKED = AMQP_CONNECTION_BLOCKED_METHOD;
static const amqp_method_number_t NERCC_AMQP_CONNECTION_UNBLOCKED = AMQP_CONNECTION_UNBLOCKED_METHOD;
static const amqp_method_number_t NERCC_AMQP_CHANNEL_CLOSE = AMQP_CHANNEL_CLOSE_METHOD;
static const amqp_method_number_t NERCC_AMQP_CHANNEL_CLOSE_OK = AMQP_CHANNEL_CLOSE_OK_METHOD;
static const amqp_method_number_t NERCC_AMQP_CHANNEL_FLOW = AMQP_CHANNEL_FLOW_METHOD;
static const amqp_method_number_t NERCC_AMQP_BASIC_DELIVER = AMQP_BASIC_DELIVER_METHOD;
static const amqp_method_number_t NERCC_AMQP_BASIC_RETURN = AMQP_BASIC_RETURN_METHOD;
static const amqp_method_number_t NERCC_AMQP_BASIC_ACK = AMQP_BASIC_ACK_METHOD;
static const amqp_method_number_t NERCC_AMQP_BASIC_NACK = AMQP_BASIC_NACK_METHOD;
static const amqp_method_number_t NERCC_AMQP_BASIC_CANCEL = AMQP_BASIC_CANCEL_METHOD;
static const amqp_method_number_t NERCC_AMQP_BASIC_CANCEL_OK = AMQP_BASIC_CANCEL_OK_METHOD;

/// `amqp_login_with_properties` with the PLAIN mechanism. The C function is variadic (the SASL
/// arguments follow the method), and Swift cannot call variadic C functions.
amqp_rpc_reply_t nercc_amqp_login_plain(amqp_connection_state_t state, const char *vhost, int channel_max,
                                        int frame_max, int heartbeat, const amqp_table_t *client_properties,
                                        const char *user, const char *password);

/// `amqp_socket_open_noblock`, also reporting the operating system's reason for a failed connect
/// (`ECONNREFUSED`, `EHOSTUNREACH`, ...; 0 on success or when unknown), so a refused connection can be
/// told apart from other socket errors. rabbitmq-c 0.11 loses that reason when the connect was still in
/// progress; the shim then recovers it with one more connect attempt.
int nercc_amqp_socket_open(amqp_socket_t *socket, const char *host, int port, const struct timeval *timeout,
                           int *os_error);

/// Loads the system's default CA locations (`SSL_CTX_set_default_verify_paths`) into an SSL socket.
/// rabbitmq-c 0.11 loads no CA at all unless given a file, and its
/// `amqp_ssl_socket_enable_default_verify_paths` only exists from 0.14. OpenSSL is looked up at run
/// time (it is already loaded by librabbitmq), so this target links nothing but librabbitmq.
/// Returns 1 on success, 0 when OpenSSL refused, -1 when the function could not be found.
int nercc_amqp_ssl_use_default_verify_paths(amqp_socket_t *socket);

#endif
