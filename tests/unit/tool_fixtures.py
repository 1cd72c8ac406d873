"""Tool docs and answers the tools-suite tests share."""

TRIANGLE = {"name": "geometry.area_triangle", "description": "Area of a triangle.",
            "parameters": {"type": "dict", "properties": {
                "base": {"type": "integer", "description": "base"},
                "height": {"type": "float", "description": "height"},
                "unit": {"type": "string", "description": "unit", "optional": True},
                "tags": {"type": "array", "items": {"type": "string"}},
                "corner": {"type": "tuple", "items": {"type": "float"}},
                "meta": {"type": "dict", "properties": {"a": {"type": "integer"}}},
                "anything": {"type": "any"},
                "exact": {"type": "boolean"}},
                "required": ["base", "height"]}}
WEATHER = {"name": "get_weather", "description": "Weather.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string"},
                                                        "unit": {"type": "string", "enum": ["c", "f"]}},
                          "required": ["city"]}}
TRIANGLE_ANSWER = {"geometry.area_triangle": {"base": [10], "height": [5.0], "unit": ["units", ""],
                                              "tags": [["Right Angle", "small"], ""],
                                              "meta": [{"a": [1], "b": [2, ""]}, ""], "exact": [True, ""]}}
