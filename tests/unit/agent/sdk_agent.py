"""A minimal CLI coding agent on the anthropic SDK, run by tests as a command agent.

It is what a team's own agent script looks like: the SDK reads ``ANTHROPIC_BASE_URL`` and
``ANTHROPIC_API_KEY`` from the environment (the gateway's, never the real key), streams each
reply, and runs the model's bash/editor tool calls itself until the model calls finish.
Usage: ``python3 sdk_agent.py PROMPT_FILE`` (standalone: imports only the SDK and stdlib).
"""

import os
import subprocess
import sys

import anthropic

TOOLS = [
    {"name": "bash", "description": "Run a shell command.",
     "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                      "required": ["command"]}},
    {"name": "editor", "description": "View or edit a file.",
     "input_schema": {"type": "object", "properties": {
         "command": {"type": "string"}, "path": {"type": "string"},
         "old_str": {"type": "string"}, "new_str": {"type": "string"}},
         "required": ["command", "path"]}},
    {"name": "finish", "description": "Say you are done.",
     "input_schema": {"type": "object", "properties": {"summary": {"type": "string"}}}},
]


def run_tool(name: str, args: dict) -> str:
    if name == "bash":
        done = subprocess.run(["bash", "-c", args["command"]], capture_output=True, text=True)
        return f"{done.stdout}{done.stderr}[exit code {done.returncode}]"
    if name == "editor":
        with open(args["path"]) as f:
            text = f.read()
        if args["command"] == "view":
            return text
        with open(args["path"], "w") as f:
            f.write(text.replace(args["old_str"], args["new_str"], 1))
        return "edited"
    return f"no tool {name}"


def main() -> int:
    with open(sys.argv[1]) as f:
        prompt = f.read()
    client = anthropic.Anthropic(max_retries=0)
    model = os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-6")
    messages: list = [{"role": "user", "content": prompt}]
    for _ in range(int(os.environ.get("SDK_AGENT_TURNS", "30"))):
        with client.messages.stream(model=model, max_tokens=4096, tools=TOOLS,
                                    messages=messages) as stream:
            reply = stream.get_final_message()
        messages.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
        results = []
        for block in reply.content:
            if block.type == "text":
                print(block.text, flush=True)
            if block.type != "tool_use":
                continue
            if block.name == "finish":
                print("FINISHED:", block.input.get("summary", ""), flush=True)
                return 0
            results.append({"type": "tool_result", "tool_use_id": block.id,
                            "content": run_tool(block.name, block.input)})
        if not results:
            return 0
        messages.append({"role": "user", "content": results})
    return 1


if __name__ == "__main__":
    sys.exit(main())
