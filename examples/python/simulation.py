"""The module Torc's map tutorial maps: run() on each params dict, postprocess() on all results."""


def run(params: dict) -> dict:
    return {"sum": params["input1"] + params["input2"] + params["input3"]}


def postprocess(results: list[dict]) -> dict:
    return {"total": sum(r["sum"] for r in results)}
