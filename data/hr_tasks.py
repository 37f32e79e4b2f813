"""HR-assistant tasks written for the bundled training data.

Each task is a question, the SQL steps that answer it (a thought before each), and a function that
words the answer from the rows the last statement returned. `data/bundle.py` runs every statement
against the sample database, so the answers in the bundled file are the database's answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Rows = list[tuple]


@dataclass(frozen=True)
class SQLStep:
    thought: str
    sql: str  # one statement, one line
    expect: str | None = None  # the observation a later step relies on; "error" when it must fail


@dataclass(frozen=True)
class HRTask:
    question: str
    steps: tuple[SQLStep, ...]
    final_thought: str
    answer: Callable[[Rows], str]  # words the answer from the last statement's rows


def _names(rows: Rows) -> str:
    names = [f"{r[0]} {r[1]}" for r in rows]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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
        lambda rows: f"Dana Kim has {rows[0][0]} vacation days left in 2026.",
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
        lambda rows: f"Ben Ortiz has used {rows[0][0]} sick days in 2026.",
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
        lambda rows: "Head count by department: " + ", ".join(f"{r[0]} {r[1]}" for r in rows) + ".",
    ),
    HRTask(
        "Who is Dana Kim's manager?",
        (
            SQLStep(
                "An employee's manager is the employee whose employee_id is their manager_id, so I join employees with itself.",
                "SELECT m.first_name, m.last_name FROM employees e JOIN employees m ON e.manager_id = m.employee_id "
                "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim';",
            ),
        ),
        "The query returned the manager's name.",
        lambda rows: f"Dana Kim's manager is {_names(rows)}.",
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
        lambda rows: f"There are {rows[0][0]} pending leave requests.",
    ),
    HRTask(
        "What is the policy on sick leave?",
        (
            SQLStep(
                "Policies are stored by topic in the policies table.",
                "SELECT text FROM policies WHERE topic = 'sick leave';",
            ),
        ),
        "I found the sick leave policy text.",
        lambda rows: rows[0][0],
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
        lambda rows: f"The Engineering department is in {rows[0][0]}.",
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
        lambda rows: "Rooms for 10 or more: " + ", ".join(f"{r[0]} ({r[1]} seats)" for r in rows) + ".",
    ),
    HRTask(
        "Who has used the most vacation days this year?",
        (
            SQLStep(
                "I sort the 2026 vacation balances by used days and keep everyone tied for the top.",
                "SELECT e.first_name, e.last_name, b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
                "WHERE b.leave_type = 'vacation' AND b.year = 2026 AND b.used_days = (SELECT max(used_days) FROM leave_balances "
                "WHERE leave_type = 'vacation' AND year = 2026) ORDER BY e.last_name;",
            ),
        ),
        "These employees used the most vacation days.",
        lambda rows: (
            f"{_names(rows)} used the most vacation days this year ({rows[0][2]} days each)."
            if len(rows) > 1
            else f"{_names(rows)} used the most vacation days this year ({rows[0][2]} days)."
        ),
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
        lambda rows: f"Ben Ortiz joined on {rows[0][0]}.",
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
        lambda rows: f"The People department has {len(rows)} employees: {_names(rows)}.",
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
        lambda rows: f"{rows[0][0]} meetings are booked in the Granite room.",
    ),
    HRTask(
        "How many approved vacation requests does Dana Kim have?",
        (
            SQLStep(
                "I count Dana Kim's approved vacation requests, but I first try a column name from memory.",
                "SELECT count(*) FROM leave_requests r JOIN employees e USING (employee_id) "
                "WHERE e.name = 'Dana Kim' AND r.leave_type = 'vacation' AND r.status = 'approved';",
                expect="error",
            ),
            SQLStep(
                "There is no name column: employees has first_name and last_name. I fix the filter.",
                "SELECT count(*) FROM leave_requests r JOIN employees e USING (employee_id) "
                "WHERE e.first_name = 'Dana' AND e.last_name = 'Kim' AND r.leave_type = 'vacation' AND r.status = 'approved';",
            ),
        ),
        "The count of approved vacation requests is in the result.",
        lambda rows: f"Dana Kim has {rows[0][0]} approved vacation requests.",
    ),
    HRTask(
        "How many personal days does Ben Ortiz have left?",
        (
            SQLStep(
                "Remaining personal days are entitled_days - used_days for leave_type 'personal'.",
                "SELECT b.entitled_days - b.used_days FROM leave_balances b JOIN employees e USING (employee_id) "
                "WHERE e.first_name = 'Ben' AND e.last_name = 'Ortiz' AND b.leave_type = 'personal' AND b.year = 2026;",
            ),
        ),
        "The query returned Ben Ortiz's remaining personal days.",
        lambda rows: f"Ben Ortiz has {rows[0][0]} personal days left in 2026.",
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
        lambda rows: (
            f"The longest-serving employees are {rows[0][0]} {rows[0][1]} (since {rows[0][2]}) "
            f"and {rows[1][0]} {rows[1][1]} (since {rows[1][2]})."
        ),
    ),
    HRTask(
        "How many unused vacation days can carry over to next year?",
        (
            SQLStep(
                "The vacation policy says what carries over.",
                "SELECT text FROM policies WHERE topic = 'vacation';",
            ),
        ),
        "The vacation policy answers the question.",
        lambda rows: "Up to 5 unused vacation days carry over; they expire on March 31. " + rows[0][0],
    ),
)
