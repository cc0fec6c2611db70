/* One logging facade: stderr when run in the foreground (CLI, tests), syslog
 * otherwise (handler under a web server, detached runs). Never pass a secret. */
#ifndef TF_LOG_H
#define TF_LOG_H

#include <stdarg.h>

enum { TF_LOG_ERR = 3, TF_LOG_WARNING = 4, TF_LOG_INFO = 6, TF_LOG_DEBUG = 7 };

/* ident: program name for syslog; to_stderr: 1 = stderr, 0 = syslog. */
void tf_log_init(const char *ident, int to_stderr);
void tf_log_set_level(int level);
void tf_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tf_err(...)   tf_log(TF_LOG_ERR, __VA_ARGS__)
#define tf_warn(...)  tf_log(TF_LOG_WARNING, __VA_ARGS__)
#define tf_info(...)  tf_log(TF_LOG_INFO, __VA_ARGS__)
#define tf_debug(...) tf_log(TF_LOG_DEBUG, __VA_ARGS__)

#endif
