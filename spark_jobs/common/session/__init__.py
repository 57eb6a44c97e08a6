"""The one way jobs get a SparkSession.

Precedence of its properties, lowest first: ``conf/spark/local.conf`` (spark-defaults format),
properties that ``spark-submit`` already put on the JVM, then ``--master`` and ``--conf key=value``
from the command line.

Modules, by concern (all on the driver):

- :mod:`~spark_jobs.common.session.conf`: the properties (defaults file, spark-submit's, the command
  line), the ``--master`` checks, and whether spark-submit started this process;
- :mod:`~spark_jobs.common.session.jvm`: the driver JVM this process starts, stopped and waited for;
- :mod:`~spark_jobs.common.session.lifecycle`: the session of one job (reused, started in the background,
  stopped), and the one off switch of its start-up accelerations (``SPARK_COLLAB_PLAIN_START=1``).
"""

from spark_jobs.common.session.conf import (
    DEFAULT_CONF,
    LOG4J_CONF,
    PROJECT_ROOT,
    add_spark_arguments,
    check_master_reachable,
    check_master_url,
    parse_conf_overrides,
    read_spark_defaults,
    resolve_spark_conf,
    under_spark_submit,
)
from spark_jobs.common.session.jvm import (
    JVM_EXIT_WAIT_S,
    driver_jvm,
    jvm_exit_code,
    stop_session,
)
from spark_jobs.common.session.lifecycle import (
    PLAIN_START_ENV,
    get_spark_session,
    job_session,
    job_session_in_background,
    session_from_args,
    session_running,
    start_accelerations_enabled,
)

__all__ = [
    "DEFAULT_CONF",
    "JVM_EXIT_WAIT_S",
    "LOG4J_CONF",
    "PLAIN_START_ENV",
    "PROJECT_ROOT",
    "add_spark_arguments",
    "check_master_reachable",
    "check_master_url",
    "driver_jvm",
    "get_spark_session",
    "job_session",
    "job_session_in_background",
    "jvm_exit_code",
    "parse_conf_overrides",
    "read_spark_defaults",
    "resolve_spark_conf",
    "session_from_args",
    "session_running",
    "start_accelerations_enabled",
    "stop_session",
    "under_spark_submit",
]
