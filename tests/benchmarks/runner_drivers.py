"""Stand-alone drivers the `openai_runners` benchmark runs in other interpreters (stdlib plus the
one tool each, so it runs in the tool's own venv): `python runner_drivers.py curator|bare ...`.

- `curator`: bespokelabs-curator's online OpenAI backend over a prompt file, results to a JSONL
  file (id, response) once curator returns its dataset; its cache dir makes a rerun resume.
- `bare`: the floor, one curl_cffi AsyncSession with N requests in flight, answers parsed and
  counted, nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def read_prompts(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def run_curator(args: argparse.Namespace) -> None:
    from bespokelabs import curator
    from datasets import Dataset

    class Answer(curator.LLM):
        def prompt(self, row: dict) -> str:
            return row["prompt"]

        def parse(self, row: dict, response: str) -> dict:
            return {"id": row["id"], "response": response}

    llm = Answer(
        model_name=args.model,
        backend="openai",
        backend_params={
            "base_url": args.base_url,
            "api_key": args.api_key,
            "max_concurrent_requests": args.concurrency,
            "max_requests_per_minute": 10**9,
            "max_tokens_per_minute": 10**12,
            "require_all_responses": False,
        },
    )
    dataset = Dataset.from_list(
        [{"id": r["id"], "prompt": r["prompt"]} for r in read_prompts(args.input)]
    )
    result = llm(dataset, working_dir=args.cache)
    with open(args.output, "w", encoding="utf-8") as out:
        for row in result.dataset:
            out.write(json.dumps({"id": row["id"], "response": row["response"]}) + "\n")


async def bare_loop(args: argparse.Namespace) -> int:
    import orjson
    from curl_cffi.requests import AsyncSession

    prompts = read_prompts(args.input)
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    answered = 0
    headers = {"content-type": "application/json", "authorization": f"Bearer {args.api_key}"}
    async with AsyncSession(headers=headers, max_clients=args.concurrency) as session:

        async def worker() -> None:
            nonlocal answered
            while not queue.empty():
                prompt = queue.get_nowait()
                body = {
                    "model": args.model,
                    "messages": [{"role": "user", "content": prompt["prompt"]}],
                }
                response = await session.post(
                    args.base_url + "/chat/completions", data=orjson.dumps(body)
                )
                answered += bool(orjson.loads(response.content)["choices"][0]["message"]["content"])

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return answered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tool", choices=["curator", "bare"])
    parser.add_argument("--input", required=True)
    parser.add_argument("--output")
    parser.add_argument("--cache")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default="sk-bench")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if args.tool == "curator":
        run_curator(args)
    else:
        answered = asyncio.run(bare_loop(args))
        print(f"answered {answered}", file=sys.stderr)


if __name__ == "__main__":
    main()
