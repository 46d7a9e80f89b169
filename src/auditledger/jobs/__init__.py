"""Jobs as code: Kestra-shaped YAML jobs, their expressions, runs and scheduler.

from auditledger.jobs import Jobs, Scheduler
jobs = Jobs(ledger)
jobs.apply(open("audit_log_cleanup.yml").read())
Scheduler(jobs).start()
"""

from auditledger.jobs.expressions import ExpressionError, Renderer
from auditledger.jobs.runner import Jobs, Run
from auditledger.jobs.scheduler import Scheduler
from auditledger.jobs.spec import TASK_TYPES, Job, Schedule, Task, parse_job

__all__ = [
    "TASK_TYPES",
    "ExpressionError",
    "Job",
    "Jobs",
    "Renderer",
    "Run",
    "Schedule",
    "Scheduler",
    "Task",
    "parse_job",
]
