"""HR-assistant tasks written for the bundled training data.

Each task is a question, the SQL steps that answer it (a short thought before each), and an answer
template that is filled from the rows the last statement returned. `data/bundle.py` runs every
statement against the sample database, so the answers in the bundled file are the database's own.

Answer templates use `str.format` fields:

- ``{0}``, ``{1}``, ... are the columns of the result's first row (a single-row task must return
  exactly one row);
- when ``row`` is set, the result may have many rows: each is worded with ``row`` and the list is
  joined into ``{rows}`` ("A, B and C"); ``{count}`` is the number of rows.

Filling checks the result's shape (row count, every column used, no NULLs), so a task whose SQL
returns something other than what its answer assumes fails the build instead of slipping in.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

Rows = list[tuple[Any, ...]]


class TaskResultError(ValueError):
    """A statement returned rows that do not fit its task's answer template."""


@dataclass(frozen=True)
class SQLStep:
    thought: str  # one or two sentences, shown before the action
    sql: str  # one statement, one line (DuckDB dialect)
    # The exact observation a later step relies on (e.g. an id it reuses), or "error" when the step is
    # meant to fail so that the trajectory shows a recovery. None: any non-empty result.
    expect: str | None = None


@dataclass(frozen=True)
class HRTask:
    question: str
    steps: tuple[SQLStep, ...]
    final_thought: str
    answer: str  # template filled from the last statement's rows (see the module docstring)
    row: str | None = None  # per-row template for results with several rows

    def fill_answer(self, rows: Rows) -> str:
        """The answer worded from `rows`; raises TaskResultError when they do not fit the task."""
        if not rows:
            raise TaskResultError(f"{self.question!r}: the last statement returned no rows")
        if self.row is None and len(rows) != 1:
            raise TaskResultError(f"{self.question!r}: expected exactly one row, got {len(rows)}")
        width = {len(r) for r in rows}
        if len(width) != 1 or any(v is None for r in rows for v in r):
            raise TaskResultError(f"{self.question!r}: ragged rows or NULL values in {rows!r}")
        used = _positional_fields(self.answer) | _positional_fields(self.row or "")
        if used != set(range(width.pop())):
            raise TaskResultError(
                f"{self.question!r}: the templates use columns {sorted(used)}, "
                f"but the result has {len(rows[0])} columns"
            )
        items = [self.row.format(*r) for r in rows] if self.row else []
        return self.answer.format(*rows[0], rows=join_words(items), count=len(rows))


def _positional_fields(template: str) -> set[int]:
    """The column indexes a format template refers to ({0}, {1:%Y}, ...)."""
    fields = (name for _, name, _, _ in string.Formatter().parse(template) if name)
    return {int(name) for name in fields if name.isdigit()}


def join_words(items: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


HR_TASKS: tuple[HRTask, ...] = (
    HRTask(
        "How many vacation days does Dana Kim have left?",
        (
            SQLStep(
                "Remaining vacation days are entitled_days - used_days in leave_balances for 2026. "
                "I join employees to find Dana Kim's row.",
                "SELECT b.entitled_days - b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
                "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim' AND b.leave_type = 'vacation' AND b.year = 2026;",
            ),
        ),
        "The query returned Dana Kim's remaining vacation days.",
        "Dana Kim has {0} vacation days left in 2026.",
    ),
    HRTask(
        "How many sick days has Ben Ortiz used this year?",
        (
            SQLStep(
                "Used sick days are in leave_balances; I look up Ben Ortiz through employees.",
                "SELECT b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
                "WHERE e.first_name = 'Ben' AND e.last_name = 'Ortiz' AND b.leave_type = 'sick' AND b.year = 2026;",
            ),
        ),
        "The result is the number of sick days Ben Ortiz used in 2026.",
        "Ben Ortiz has used {0} sick days in 2026.",
    ),
    HRTask(
        "How many employees work in each department?",
        (
            SQLStep(
                "I count employees grouped by department name.",
                "SELECT d.name, count(*) AS employees FROM employees e JOIN departments d USING (department_id) "
                "GROUP BY d.name ORDER BY employees DESC, d.name;",
            ),
        ),
        "I have the head count of every department.",
        "Head count by department: {rows}.",
        row="{0} {1}",
    ),
    HRTask(
        "Who is Dana Kim's manager?",
        (
            SQLStep(
                "An employee's manager is the employee whose employee_id is their manager_id, "
                "so I join employees with itself.",
                "SELECT m.first_name, m.last_name FROM employees e JOIN employees m ON e.manager_id = m.employee_id "
                "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim';",
            ),
        ),
        "The query returned the manager's name.",
        "Dana Kim's manager is {0} {1}.",
    ),
    HRTask(
        "How many leave requests are still pending?",
        (
            SQLStep(
                "I count the leave requests whose status is pending.",
                "SELECT count(*) FROM leave_requests WHERE status = 'pending';",
            ),
        ),
        "The count of pending requests is in the result.",
        "There are {0} pending leave requests.",
    ),
    HRTask(
        "What is the policy on sick leave?",
        (
            SQLStep(
                "Policies are stored by topic in the policies table.",
                "SELECT text FROM policies WHERE topic = 'sick leave';",
            ),
        ),
        "I found the sick leave policy.",
        "{0}",
    ),
    HRTask(
        "Where is the Engineering department located?",
        (
            SQLStep(
                "The departments table has each department's location.",
                "SELECT location FROM departments WHERE name = 'Engineering';",
            ),
        ),
        "The location of Engineering is in the result.",
        "The Engineering department is in {0}.",
    ),
    HRTask(
        "Which meeting rooms seat at least 10 people?",
        (
            SQLStep(
                "Rooms and their capacities are in the rooms table.",
                "SELECT name, capacity FROM rooms WHERE capacity >= 10 ORDER BY capacity;",
            ),
        ),
        "I have every room with a capacity of 10 or more.",
        "Rooms for 10 or more people: {rows}.",
        row="{0} ({1} seats)",
    ),
    HRTask(
        "Who has used the most vacation days this year?",
        (
            SQLStep(
                "I compare everyone's 2026 vacation balance with the highest used_days, "
                "so that ties are all listed.",
                "SELECT e.first_name, e.last_name, b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
                "WHERE b.leave_type = 'vacation' AND b.year = 2026 AND b.used_days = (SELECT max(used_days) FROM leave_balances "
                "WHERE leave_type = 'vacation' AND year = 2026) ORDER BY e.last_name;",
            ),
        ),
        "These employees used the most vacation days.",
        "The most vacation days used in 2026 is {2}, by {rows}.",
        row="{0} {1}",
    ),
    HRTask(
        "When did Ben Ortiz join the company?",
        (
            SQLStep(
                "The hire date is stored in the employees table.",
                "SELECT hire_date FROM employees WHERE first_name = 'Ben' AND last_name = 'Ortiz';",
            ),
        ),
        "I found Ben Ortiz's hire date.",
        "Ben Ortiz joined on {0}.",
    ),
    HRTask(
        "Who works in the People department?",
        (
            SQLStep(
                "I need the department_id of People first.",
                "SELECT department_id FROM departments WHERE name = 'People';",
                expect="[(5,)]",
            ),
            SQLStep(
                "People has department_id 5. Now I list its employees.",
                "SELECT first_name, last_name FROM employees WHERE department_id = 5 ORDER BY last_name, first_name;",
            ),
        ),
        "I have everyone in the People department.",
        "The People department has {count} employees: {rows}.",
        row="{0} {1}",
    ),
    HRTask(
        "How many meetings are booked in the Granite room?",
        (
            SQLStep(
                "I look up the Granite room's id.",
                "SELECT room_id FROM rooms WHERE name = 'Granite';",
                expect="[(7,)]",
            ),
            SQLStep(
                "Granite is room 7. Now I count its meetings.",
                "SELECT count(*) FROM meetings WHERE room_id = 7;",
            ),
        ),
        "The count of meetings in Granite is in the result.",
        "{0} meetings are booked in the Granite room.",
    ),
    HRTask(
        "Which meetings is Ben Ortiz organizing?",
        (
            SQLStep(
                "Meetings name their organizer by employee id, so I first find Ben Ortiz's employee_id.",
                "SELECT employee_id FROM employees WHERE first_name = 'Ben' AND last_name = 'Ortiz';",
                expect="[(21,)]",
            ),
            SQLStep(
                "Ben Ortiz is employee 21. Now I list the meetings he organizes in time order.",
                "SELECT title, start_time FROM meetings WHERE organizer_id = 21 ORDER BY start_time;",
            ),
        ),
        "I have all of Ben Ortiz's meetings.",
        "Ben Ortiz is organizing {count} meetings: {rows}.",
        row="{0} on {1:%Y-%m-%d} at {1:%H:%M}",
    ),
    HRTask(
        "How many approved vacation requests does Dana Kim have?",
        (
            SQLStep(
                "I count Dana Kim's approved vacation requests by joining leave_requests with employees.",
                "SELECT count(*) FROM leave_requests r JOIN employees e USING (employee_id) "
                "WHERE e.name = 'Dana Kim' AND r.leave_type = 'vacation' AND r.status = 'approved';",
                expect="error",
            ),
            SQLStep(
                "The employees table has no name column; names are split into first_name and last_name. "
                "I fix the filter.",
                "SELECT count(*) FROM leave_requests r JOIN employees e USING (employee_id) "
                "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim' AND r.leave_type = 'vacation' AND r.status = 'approved';",
            ),
        ),
        "The count of approved vacation requests is in the result.",
        "Dana Kim has {0} approved vacation requests.",
    ),
    HRTask(
        "How many personal days does Ben Ortiz have left?",
        (
            SQLStep(
                "Remaining personal days are entitled_days - used_days for leave_type 'personal' in 2026.",
                "SELECT b.entitled_days - b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
                "WHERE e.first_name = 'Ben' AND e.last_name = 'Ortiz' AND b.leave_type = 'personal' AND b.year = 2026;",
            ),
        ),
        "The query returned Ben Ortiz's remaining personal days.",
        "Ben Ortiz has {0} personal days left in 2026.",
    ),
    HRTask(
        "Who are the two longest-serving employees?",
        (
            SQLStep(
                "The earliest hire dates mark the longest-serving employees.",
                "SELECT first_name, last_name, hire_date FROM employees ORDER BY hire_date LIMIT 2;",
            ),
        ),
        "I have the two earliest hires.",
        "The longest-serving employees are {rows}.",
        row="{0} {1} (since {2})",
    ),
    HRTask(
        "How many days a week can I work from home?",
        (
            SQLStep(
                "Working from home is covered by the remote work policy.",
                "SELECT text FROM policies WHERE topic = 'remote work';",
            ),
        ),
        "The remote work policy answers the question.",
        "{0}",
    ),
    HRTask(
        "How many meetings is Dana Kim attending?",
        (
            SQLStep(
                "Attendance is in meeting_attendees, which includes organizers; I join employees to find Dana Kim.",
                "SELECT count(*) FROM meeting_attendees a JOIN employees e USING (employee_id) "
                "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim';",
            ),
        ),
        "The result is the number of meetings Dana Kim attends.",
        "Dana Kim is attending {0} meetings.",
    ),
)
