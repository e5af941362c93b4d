"""Which route a path falls under: templates by lookup or by pattern, literal parts literal."""

from __future__ import annotations

import pytest

from milkprice.errors import NotFound
from milkprice.predict import routes


@pytest.mark.parametrize(
    ("path", "template", "params"),
    [
        ("/", "/", {}),
        ("/predict", "/predict", {}),
        ("/predict/", "/predict", {}),
        ("/openapi.json", "/openapi.json", {}),
        ("/v2/models/legacy/infer", "/v2/models/{name}/infer", {"name": "legacy"}),
        (
            "/v2/models/forecast/versions/v1.2/ready",
            "/v2/models/{name}/versions/{version}/ready",
            {"name": "forecast", "version": "v1.2"},
        ),
    ],
)
def test_a_path_falls_under_its_template_with_its_parameters(
    path: str, template: str, params: dict[str, str]
) -> None:
    assert routes.locate(path) == (template, params)


@pytest.mark.parametrize(
    "path",
    ["/openapiXjson", "/backtest-png", "/predict/more", "/v2/models/a/b", "/v2/models//infer"],
)
def test_a_dot_is_a_dot_and_a_parameter_one_segment(path: str) -> None:
    with pytest.raises(NotFound, match="no route"):
        routes.locate(path)


def test_every_template_is_found_by_lookup_or_by_exactly_one_pattern() -> None:
    patterned = [template for _, template in routes.PATTERNS]
    assert sorted([*routes.STATIC, *patterned]) == sorted(routes.ROUTES)
    assert all("{" in template for template in patterned)
