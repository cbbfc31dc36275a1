//! DB Bench's protocols: the v0.2 text protocol (the fixed instructions, and reading a reply
//! the way AgentBench does: `Action: (.*?)\n`, the first ```` ```sql ```` block,
//! `\nFinal Answer:(.*)`), and the function-calling protocol's system prompt and tools.

use serde_json::json;

use crate::chat::Tool;

/// The instructions AgentBench v0.2 sends as the first user turn (the assistant then says
/// `Ok.`); the protocol the trained model must speak.
pub const INSTRUCTIONS: &str = "
I will ask you a question, then you should help me operate a MySQL database with SQL to answer the question.
You have to explain the problem and your solution to me and write down your thoughts.
After thinking and explaining thoroughly, every round you can choose to operate or to answer.
your operation should be like this:
Action: Operation
```sql
SELECT * FROM table WHERE condition;
```
You MUST put SQL in markdown format without any other comments. Your SQL should be in one line.
Every time you can only execute one SQL statement. I will only execute the statement in the first SQL code block. Every time you write a SQL, I will execute it for you and give you the output.
If you are done operating, and you want to commit your final answer, then write down:
Action: Answer
Final Answer: [\"ANSWER1\", \"ANSWER2\", ...]
DO NOT write this pattern unless you are sure about your answer. I expect an accurate and correct answer.
Your answer should be accurate. Your answer must be exactly the same as the correct answer.
If the question is about modifying the database, then after done operation, your answer field can be anything.
If your response cannot match any pattern I mentioned earlier, you will be judged as FAIL immediately.
Your input will be raw MySQL response, you have to deal with it by yourself.
";

/// The system prompt of AgentBench's function-calling DB Bench.
pub const FC_SYSTEM_PROMPT: &str = "I will ask you a question, then you should help me operate a MySQL database with SQL to answer the question.
You have to explain the problem and your solution to me and write down your thoughts.
After thinking and explaining thoroughly, every round you can choose to operate or to answer with the two specific tools provided.
If you should execute a SQL query, use the `execute_sql` function, Your SQL should be in one line.
Every time you can only execute one SQL statement. I will only execute the statement in the first SQL code block. Every time you write a SQL, I will execute it for you and give you the output.
If you are done operating, and you want to commit your final answer, then use the `commit_final_answer` function.
DO NOT use this tool unless you are sure about your answer. I expect an accurate and correct answer.
Your answer should be accurate. Your answer must be exactly the same as the correct answer.
If the question is about modifying the database, then after done operation, your answer field can be anything.
If your response cannot match any pattern I mentioned earlier, you will be judged as FAIL immediately.
You should always use the tools provided to submit your answer. Be careful not to write it in the content field.
Your input will be raw MySQL response, you have to deal with it by yourself.";

/// The two tools of the function-calling protocol: `execute_sql{query}` and
/// `commit_final_answer{answers}`.
pub fn fc_tools() -> Vec<Tool> {
    vec![
        Tool::function(
            "execute_sql",
            "Execute one SQL statement on the database and return its result.",
            json!({"type": "object",
                   "properties": {"query": {"type": "string",
                                            "description": "The SQL statement, in one line."}},
                   "required": ["query"]}),
        ),
        Tool::function(
            "commit_final_answer",
            "Commit the final answer to the question; this ends the task.",
            json!({"type": "object",
                   "properties": {"answers": {"type": "array", "items": {"type": "string"},
                                              "description": "The answers, each as a string."}},
                   "required": ["answers"]}),
        ),
    ]
}

/// What a reply asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextAction {
    /// `Action: Operation` with the SQL of its first ```` ```sql ```` block (one line: inner
    /// newlines become spaces, surrounding whitespace trimmed).
    Operation(String),
    /// `Action: Operation` without a well-formed SQL block: the episode fails.
    MissingSql,
    /// A final answer: the raw text after `Final Answer:` up to the end of its line.
    Answer(String),
    /// Neither pattern: the episode fails.
    Invalid,
}

/// The text of `Action: (.*?)\n`: after the first `Action: `, up to the next newline
/// (`None` when no newline follows).
fn action(reply: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(at) = reply[from..].find("Action: ") {
        let start = from + at + "Action: ".len();
        if let Some(end) = reply[start..].find('\n') {
            return Some(&reply[start..start + end]);
        }
        from = start;
    }
    None
}

/// The body of the first ```` ```sql\n … \n``` ```` block.
fn sql_block(reply: &str) -> Option<&str> {
    let open = "```sql\n";
    let start = reply.find(open)? + open.len();
    let end = reply[start..].find("\n```")?;
    Some(&reply[start..start + end])
}

/// The text of `\nFinal Answer:(.*)`: after the first `\nFinal Answer:`, to the end of the line.
fn final_answer(reply: &str) -> Option<&str> {
    let marker = "\nFinal Answer:";
    let start = reply.find(marker)? + marker.len();
    let rest = &reply[start..];
    // Python's `.` stops only at `\n`.
    Some(rest.split('\n').next().unwrap_or(rest))
}

/// Reads a reply as AgentBench does; `operations_left` is false once the round limit is
/// reached (an `Operation` then counts as no answer).
pub fn parse_reply(reply: &str, operations_left: bool) -> TextAction {
    if operations_left && action(reply) == Some("Operation") {
        return match sql_block(reply) {
            Some(sql) => TextAction::Operation(sql.trim().replace('\n', " ")),
            None => TextAction::MissingSql,
        };
    }
    match final_answer(reply) {
        Some(answer) => TextAction::Answer(answer.to_string()),
        None => TextAction::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_take_the_first_sql_block_on_one_line() {
        let reply = "I will count.\nAction: Operation\n```sql\nSELECT COUNT(*)\nFROM `t`;\n```\n```sql\nDROP TABLE t;\n```";
        assert_eq!(
            parse_reply(reply, true),
            TextAction::Operation("SELECT COUNT(*) FROM `t`;".into())
        );
        assert_eq!(
            parse_reply("Action: Operation\nSELECT 1", true),
            TextAction::MissingSql
        );
        // the block must open with a newline after ```sql and close on its own line
        assert_eq!(
            parse_reply("Action: Operation\n```sql SELECT 1```", true),
            TextAction::MissingSql
        );
        assert_eq!(
            parse_reply("Action: Operation\n```sql\n\n```", true),
            TextAction::Operation(String::new())
        );
    }

    #[test]
    fn answers_are_read_to_the_end_of_their_line() {
        let reply = "Done.\nAction: Answer\nFinal Answer: [\"1\", \"2\"]\nThanks";
        assert_eq!(
            parse_reply(reply, true),
            TextAction::Answer(" [\"1\", \"2\"]".into())
        );
        // `Action:` without a newline after it is no action; the answer still counts
        assert_eq!(
            parse_reply("x\nFinal Answer: 3 Action: Operation", true),
            TextAction::Answer(" 3 Action: Operation".into())
        );
        // at the start of the reply there is no newline before `Final Answer:`
        assert_eq!(parse_reply("Final Answer: [1]", true), TextAction::Invalid);
        assert_eq!(parse_reply("", true), TextAction::Invalid);
    }

    #[test]
    fn past_the_round_limit_an_operation_is_no_answer() {
        let reply = "Action: Operation\n```sql\nSELECT 1\n```";
        assert_eq!(parse_reply(reply, false), TextAction::Invalid);
    }
}
