#!/bin/sh
# threatfeed — mod_fcgid wrapper for shared hosting.
#
# Install this file as api/threatfeed.fcgi next to the dashboard (mode 0755)
# when you cannot set FcgidInitialEnv in the server configuration: it sets the
# handler's environment and execs the real binary, which inherits the FastCGI
# socket that mod_fcgid passes on fd 0.  Edit the five lines below.  Keep the
# state dir OUTSIDE the document root.

THREATFEED_STATE_DIR=/home/alice/threatfeed/state
THREATFEED_DB=/home/alice/threatfeed/state/db
THREATFEED_CONF=/home/alice/threatfeed/threatfeed.conf
THREATFEED_WORKER=/home/alice/threatfeed/bin/threatfeed
TF_HANDLER=/home/alice/threatfeed/bin/threatfeed.fcgi

export THREATFEED_STATE_DIR THREATFEED_DB THREATFEED_WORKER
# the config file is optional (api_token, trust_remote_user, ...)
if [ -r "$THREATFEED_CONF" ]; then export THREATFEED_CONF; fi
# the store is shared with the CLI / cron job of the same account
umask 007
exec "$TF_HANDLER"
