"""Search quality: hit@1 and nDCG@10 of hybrid, semantic and keyword search over labelled queries.

Corpus: the demo catalog (267 products, brand and size look-alikes among them: Oatly 1L and
250ml, Barilla 500g and 1kg, Pampers sizes 3/4/5 …) plus generated look-alikes: each of the
200 unbranded demo products under two other brands, one of them in another size ("Nordic Whole
Milk 2L" beside "Whole Milk 1L"), with the same description: products a vector alone can hardly
tell apart. All 667 are created through the service and embedded with the configured model.

Queries (at least 80), each with the products that answer it, in four kinds:
- ``brand_size``: a brand and/or a size, e.g. "oatly 250ml" (one right product);
- ``code``: a product's SKU, as printed or in lower case (one right product);
- ``misspelt``: typos, missing or doubled letters, accents left out ("barila spagetti 500g");
- ``meaning``: what a shopper wants, no product words ("something to spread on toast"); every
  fitting product counts.
For misspelt and meaning queries, a generated look-alike of a right product counts too when it
differs only in what the query leaves open (the brand; the size unless the query gives one).
Hand-written ones plus generated ones (seeded): brand + size of generated look-alikes, typos
of demo names, SKUs of random products.

Per mode, through ``selectors.product_search`` with limit 10 (the vector of each query made
once): hit@1 (the first hit is a right one) and nDCG@10 (binary gains), overall and per kind.
Targets: hybrid beats both single arms overall on both measures, and loses nothing against
semantic on the meaning queries. The other modules can reuse ``evaluate()``.

Then the same catalog is embedded again with the torch backend (the reference the faster
encoders are quantized from: the model identity changes, so every product is re-embedded, as
after a switch) and evaluated again: the configured backend (onnx-int8 by default) must lose no
hit@1 against torch in any mode, over all queries.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from django.conf import settings
from django.test import override_settings

from bench import Result, demo_products, report, reset_catalog
from catalog import embeddings, services
from catalog.selectors import SearchMode, product_search

SEED = 15
LIMIT = 10
GENERATED_BRANDS = ["Nordic", "Sunny Farm", "Maison", "Alpine", "Urban Kitchen", "Green Valley", "Bio Plus"]
# Another size of the same unit, for the generated look-alikes.
OTHER_SIZE = {"g": "750g", "kg": "2kg", "ml": "250ml", "L": "2L", "Pack": "12 Pack", "Bags": "160 Bags"}
SIZE = re.compile(r"(\d+(?:\.\d+)?(?:x\d+)?)\s?(kg|g|ml|L|Pack|Bags)\b")

BRAND_SIZE = [
    ("oatly 250ml", ["Oatly Oat Drink 250ml"]),
    ("oatly 1l", ["Oatly Oat Drink 1L"]),
    ("oatly barista", ["Oatly Barista Edition 1L"]),
    ("alpro oat 250ml", ["Alpro Oat Drink 250ml"]),
    ("alpro soya", ["Alpro Soya Drink 1L"]),
    ("alpro almond", ["Alpro Almond Drink 1L"]),
    ("barilla spaghetti 1kg", ["Barilla Spaghetti 1kg"]),
    ("barilla penne", ["Barilla Penne Rigate 500g"]),
    ("de cecco fusilli", ["De Cecco Fusilli 500g"]),
    ("lavazza beans 250g", ["Lavazza Espresso Beans 250g"]),
    ("lavazza ground coffee", ["Lavazza Ground Coffee 250g"]),
    ("coca cola zero can", ["Coca-Cola Zero Sugar 330ml Can"]),
    ("coca cola 1.5l", ["Coca-Cola 1.5L"]),
    ("pepsi max", ["Pepsi Max 330ml Can"]),
    ("evian 500ml", ["Evian Still Water 500ml"]),
    ("fage 0%", ["Fage Total 0% Greek Yogurt 500g"]),
    ("fage 5% 170g", ["Fage Total 5% Greek Yogurt 170g"]),
    ("kerrygold unsalted", ["Kerrygold Unsalted Butter 250g"]),
    ("corn flakes 750g", ["Kellogg's Corn Flakes 750g"]),
    ("heinz ketchup 910g", ["Heinz Tomato Ketchup 910g"]),
    ("lindt 85%", ["Lindt Excellence 85% Cocoa 100g"]),
    ("pringles sour cream", ["Pringles Sour Cream & Onion 165g"]),
    ("ben and jerrys cookie dough", ["Ben & Jerry's Cookie Dough 465ml"]),
    ("persil non bio", ["Persil Non-Bio Liquid 1.43L"]),
    ("colgate max white", ["Colgate Max White Toothpaste 75ml"]),
    ("pampers size 4", ["Pampers Baby-Dry Size 4 46 Pack"]),
    ("pampers size 5", ["Pampers Baby-Dry Size 5 40 Pack"]),
    ("makita drill", ["Makita Cordless Drill 18V"]),
    ("filippo berio 1l", ["Filippo Berio Extra Virgin Olive Oil 1L"]),
    ("twinings earl grey", ["Twinings Earl Grey 50 Bags"]),
]
MISSPELT = [
    ("oatyl 250ml", ["Oatly Oat Drink 250ml"]),
    ("barila spagetti 500g", ["Barilla Spaghetti 500g"]),
    ("mozarella", ["Mozzarella 125g", "Galbani Mozzarella 125g"]),
    ("parmesean", ["Parmesan Wedge 200g"]),
    ("croisants", ["Butter Croissants 4 Pack"]),
    (
        "expresso beans",
        [
            "Espresso Coffee Beans 1kg",
            "Lavazza Espresso Beans 1kg",
            "Lavazza Espresso Beans 250g",
            "Illy Espresso Beans 250g",
        ],
    ),
    ("brocoli", ["Broccoli 400g"]),
    ("avacado", ["Hass Avocados 2 Pack"]),
    ("strawbery jam", ["Strawberry Jam 340g"]),
    ("chedar", ["Mature Cheddar 400g"]),
    ("nutela", ["Nutella Hazelnut Spread 400g"]),
    ("kerygold butter", ["Kerrygold Salted Butter 250g", "Kerrygold Unsalted Butter 250g"]),
    ("sensodine", ["Sensodyne Repair & Protect 75ml"]),
    ("haagen dazs vanilla", ["Häagen-Dazs Vanilla 460ml"]),
    ("camembert president", ["Président Camembert 250g"]),
    ("basmatti rice", ["Basmati Rice 1kg"]),
    ("tortila chips", ["Tortilla Chips 200g"]),
    ("peperoni pizza", ["Pepperoni Pizza 420g"]),
    ("dishwasher tablts", ["Dishwasher Tablets 40 Pack"]),
    ("lindt exellence 70", ["Lindt Excellence 70% Cocoa 100g"]),
]
MEANING = [
    (
        "something to spread on toast",
        [
            "Strawberry Jam 340g",
            "Wildflower Honey 340g",
            "Salted Butter 250g",
            "Unsalted Butter 250g",
            "Nutella Hazelnut Spread 400g",
            "Kerrygold Salted Butter 250g",
            "Kerrygold Unsalted Butter 250g",
            "Lurpak Spreadable Slightly Salted 500g",
            "Dairy-Free Butter Alternative 250g",
            "Cashew Cream Cheese Alternative 150g",
        ],
    ),
    (
        "dairy free milk for my coffee",
        [
            "Organic Oat Milk 1L",
            "Barista Oat Drink 1L",
            "Oatly Barista Edition 1L",
            "Oatly Oat Drink 1L",
            "Alpro Oat Drink 1L",
            "Soy Milk 1L",
            "Unsweetened Almond Milk 1L",
            "Alpro Soya Drink 1L",
            "Alpro Almond Drink 1L",
            "Coconut Milk Drink 1L",
            "Rice Drink 1L",
            "Pea Protein Milk 1L",
        ],
    ),
    (
        "fizzy drink without sugar",
        [
            "Coca-Cola Zero Sugar 330ml Can",
            "Pepsi Max 330ml Can",
            "Sugar-Free Lemonade 1.5L",
            "Sparkling Mineral Water 1.5L",
            "San Pellegrino Sparkling Water 750ml",
        ],
    ),
    (
        "something to clean the bathroom",
        ["Bathroom Limescale Remover 750ml", "Thick Bleach 750ml", "Multi-Surface Cleaner Spray 750ml"],
    ),
    (
        "wash my clothes",
        [
            "Laundry Detergent Liquid 1.5L",
            "Ariel All-in-1 Pods 30 Washes",
            "Persil Non-Bio Liquid 1.43L",
            "Persil Bio Liquid 1.43L",
            "Fabric Softener 1.5L",
            "Stain Remover Spray 500ml",
        ],
    ),
    (
        "a cold dessert for a hot day",
        [
            "Vanilla Ice Cream 1L",
            "Chocolate Ice Cream 1L",
            "Mango Sorbet 500ml",
            "Ben & Jerry's Cookie Dough 465ml",
            "Ben & Jerry's Chocolate Fudge Brownie 465ml",
            "Häagen-Dazs Vanilla 460ml",
        ],
    ),
    (
        "what to eat for breakfast",
        [
            "Corn Flakes 500g",
            "Kellogg's Corn Flakes 500g",
            "Kellogg's Corn Flakes 750g",
            "Kellogg's Special K Original 375g",
            "Rolled Oats 1kg",
            "Oat & Honey Granola Bars 6 Pack",
            "Butter Croissants 4 Pack",
            "Free-Range Eggs 10 Pack",
            "English Muffins 6 Pack",
        ],
    ),
    (
        "make a cup of tea",
        [
            "English Breakfast Tea 80 Bags",
            "Green Tea 40 Bags",
            "Peppermint Herbal Tea 20 Bags",
            "Twinings Earl Grey 50 Bags",
            "PG Tips 80 Bags",
        ],
    ),
    (
        "a warm drink without caffeine before bed",
        ["Peppermint Herbal Tea 20 Bags", "Decaf Ground Coffee 250g", "Hot Chocolate Powder 400g"],
    ),
    ("feeding a newborn", ["First Infant Milk 800g", "Follow-On Milk 800g", "Anti-Colic Baby Bottles 2x260ml"]),
    (
        "keep the baby dry at night",
        [
            "Newborn Nappies Size 1 44 Pack",
            "Nappies Size 4 36 Pack",
            "Pampers Baby-Dry Size 3 52 Pack",
            "Pampers Baby-Dry Size 4 46 Pack",
            "Pampers Baby-Dry Size 5 40 Pack",
            "Huggies Ultra Comfort Size 4 36 Pack",
        ],
    ),
    (
        "tools to put up a shelf",
        [
            "Cordless Drill 18V",
            "Bosch Cordless Drill 18V",
            "Makita Cordless Drill 18V",
            "Hammer Drill 750W",
            "Wood Screws Assorted 500 Pack",
            "Spirit Level 60cm",
            "Screwdriver Set 8 Piece",
            "Drill Bit Set 30 Piece",
            "Tape Measure 5m",
            "Cordless Impact Driver 18V",
        ],
    ),
    (
        "cutting wood",
        ["Circular Saw 1200W", "Jigsaw 650W", "Cordless Reciprocating Saw 18V", "Orbital Sander 240W"],
    ),
    (
        "protein for vegans",
        [
            "Firm Tofu 400g",
            "Smoked Tofu 200g",
            "Tempeh 200g",
            "Seitan Strips 200g",
            "Pea Protein Milk 1L",
            "Vegan Burger Patties 2x113g",
            "Plant-Based Mince 400g",
            "Red Lentils 500g",
            "Chickpeas 400g",
        ],
    ),
    (
        "a healthy snack",
        [
            "Mixed Nuts 200g",
            "Lightly Salted Rice Cakes 130g",
            "Dried Mango 100g",
            "Oat & Honey Granola Bars 6 Pack",
            "Peanut Protein Bar 60g",
            "Salted Roasted Peanuts 200g",
        ],
    ),
    (
        "snacks for a party",
        [
            "Sea Salt Crisps 150g",
            "Salt & Vinegar Crisps 150g",
            "Tortilla Chips 200g",
            "Salted Pretzels 175g",
            "Microwave Popcorn 3x90g",
            "Pringles Original 165g",
            "Pringles Sour Cream & Onion 165g",
            "Walkers Ready Salted Crisps 6x25g",
            "Salted Roasted Peanuts 200g",
            "Gummy Bears 200g",
            "Haribo Goldbears 200g",
        ],
    ),
    (
        "fresh fruit",
        [
            "Bananas 1kg",
            "Gala Apples 1kg",
            "Strawberries 400g",
            "Blueberries 150g",
            "Seedless Red Grapes 500g",
            "Lemons 4 Pack",
        ],
    ),
    (
        "things for a green salad",
        ["Iceberg Lettuce", "Cucumber", "Vine Tomatoes 500g", "Red Bell Peppers 3 Pack", "Baby Spinach 200g"],
    ),
    (
        "a quick dinner from the freezer",
        [
            "Margherita Pizza 400g",
            "Pepperoni Pizza 420g",
            "Dr. Oetker Ristorante Pizza Mozzarella 335g",
            "Beef Lasagne 400g",
            "Fish Fingers 10 Pack",
            "Chicken Nuggets 500g",
            "Breaded Cod Fillets 4 Pack",
            "Vegetable Spring Rolls 12 Pack",
        ],
    ),
    (
        "fresh breath",
        [
            "Fluoride Toothpaste 75ml",
            "Mouthwash 500ml",
            "Dental Floss 50m",
            "Colgate Total Toothpaste 75ml",
            "Colgate Max White Toothpaste 75ml",
            "Sensodyne Repair & Protect 75ml",
        ],
    ),
    ("protect my skin on the beach", ["Sunscreen SPF 50 200ml"]),
    (
        "bread for sandwiches",
        [
            "White Sandwich Loaf 800g",
            "Wholemeal Sliced Loaf 800g",
            "Sourdough Bread 800g",
            "Rye Bread 500g",
            "Gluten-Free Seeded Loaf 400g",
            "Ciabatta Rolls 4 Pack",
        ],
    ),
    (
        "baking a cake",
        ["Plain Flour 1kg", "Granulated Sugar 1kg", "Free-Range Eggs 10 Pack", "Unsalted Butter 250g"],
    ),
    ("flakes in my hair", ["Head & Shoulders Classic Clean 400ml"]),
    (
        "oil for frying and salad dressing",
        [
            "Extra Virgin Olive Oil 750ml",
            "Sunflower Oil 1L",
            "Filippo Berio Extra Virgin Olive Oil 500ml",
            "Filippo Berio Extra Virgin Olive Oil 1L",
        ],
    ),
    ("drink after running", ["Isotonic Sports Drink 500ml", "Still Spring Water 6x1.5L", "Evian Still Water 500ml"]),
    (
        "wrap leftovers",
        ["Aluminium Foil 10m", "Cling Film 30m"],
    ),
]


@dataclass(frozen=True)
class Query:
    kind: str
    text: str
    relevant: frozenset[str]  # product names


def generated_look_alikes(products: list[dict]) -> list[dict]:
    """Each unbranded demo product under two other brands, the second in another size."""
    rnd = random.Random(SEED)
    made = []
    for product in products[:200]:
        for variant, brand in enumerate(rnd.sample(GENERATED_BRANDS, 2)):
            name = product["name"]
            if variant:
                name = SIZE.sub(lambda match: OTHER_SIZE[match.group(2)], name, count=1)
            made.append({**product, "sku": f"GEN-{len(made):05d}", "name": f"{brand} {name}", "base": product["name"]})
    return made


def typo(word: str, rnd: random.Random) -> str:
    """One typo a shopper makes: two letters swapped, one dropped or one doubled."""
    i = rnd.randrange(1, len(word) - 1)
    kind = rnd.choice(["swap", "drop", "double"])
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def queries(demo: list[dict], generated: list[dict]) -> list[Query]:
    rnd = random.Random(SEED)
    variants: dict[str, set[str]] = {}
    for product in generated:
        variants.setdefault(product["base"], set()).add(product["name"])

    def with_variants(text, names):
        """The names plus their generated look-alikes that differ only in what ``text`` leaves
        open: another brand always (no query here names a generated brand), another size only
        if it gives none. "chedar" is answered by any cheddar; "oragne juice 1l" not by a 2L."""
        sized = SIZE.search(text) is not None
        return frozenset(names) | frozenset(
            variant
            for name in names
            for variant in variants.get(name, ())
            if not sized or [m.group(0) for m in SIZE.finditer(variant)] == [m.group(0) for m in SIZE.finditer(name)]
        )

    made = [Query("brand_size", text, frozenset(names)) for text, names in BRAND_SIZE]
    made += [Query("misspelt", text, with_variants(text, names)) for text, names in MISSPELT]
    made += [Query("meaning", text, with_variants(text, names)) for text, names in MEANING]
    for product in rnd.sample(generated, 12):
        made.append(Query("brand_size", product["name"].lower(), frozenset([product["name"]])))
    for product in rnd.sample(demo[:200], 10):
        words = product["name"].split()
        longest = max(range(len(words)), key=lambda i: len(words[i]) if words[i].isalpha() else 0)
        if len(words[longest]) < 5:
            continue
        words[longest] = typo(words[longest].lower(), rnd)
        text = " ".join(words).lower()
        made.append(Query("misspelt", text, with_variants(text, [product["name"]])))
    for i, product in enumerate(rnd.sample(demo, 12)):
        made.append(Query("code", product["sku"].lower() if i % 2 else product["sku"], frozenset([product["name"]])))
    return made


def load(demo: list[dict], generated: list[dict]) -> None:
    reset_catalog()
    for spec in demo + generated:
        services.product_create(
            sku=spec["sku"],
            name=spec["name"],
            description=spec["description"],
            category=spec["category"],
            price=spec["price"],
            currency=spec["currency"],
        )
    while services.embeddings_embed_stale():
        pass


def ndcg(found: list[str], relevant: frozenset[str]) -> float:
    gains = sum(1 / math.log2(rank + 2) for rank, name in enumerate(found[:LIMIT]) if name in relevant)
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), LIMIT)))
    return gains / ideal


def scores(labelled: list[Query], mode: str) -> list[tuple[float, float]]:
    """(hit@1, nDCG@10) of each query."""
    made = []
    for query in labelled:
        vector = embeddings.query_vector(query.text) if mode != SearchMode.KEYWORD else None
        hits = product_search(query=query.text, vector=vector, mode=mode, limit=LIMIT)
        found = [hit.product.name for hit in hits]
        made.append((float(bool(found) and found[0] in query.relevant), ndcg(found, query.relevant)))
    return made


def evaluate(labelled: list[Query], mode: str) -> dict[str, dict[str, float]]:
    """Mean hit@1 and nDCG@10 per kind of query and ``all``."""
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for query, score in zip(labelled, scores(labelled, mode), strict=True):
        for kind in (query.kind, "all"):
            by_kind.setdefault(kind, []).append(score)
    return {
        kind: {"hit@1": sum(s[0] for s in values) / len(values), "ndcg@10": sum(s[1] for s in values) / len(values)}
        for kind, values in by_kind.items()
    }


def run(quick: bool) -> list[Result]:
    demo = demo_products()
    generated = generated_look_alikes(demo)
    labelled = queries(demo, generated)
    load(demo, generated)
    print(f"  {len(demo) + len(generated)} products, {len(labelled)} queries", flush=True)
    by_mode = {mode: evaluate(labelled, mode) for mode in SearchMode.values}
    meaning = [query for query in labelled if query.kind == "meaning"]
    worse = sum(
        hybrid[1] < semantic[1] - 1e-9
        for hybrid, semantic in zip(
            scores(meaning, SearchMode.HYBRID), scores(meaning, SearchMode.SEMANTIC), strict=True
        )
    )
    backend, reference = settings.EMBEDDING_BACKEND, "torch"
    by_reference = None
    if backend != reference:
        with override_settings(EMBEDDING_BACKEND=reference):
            services.embeddings_mark_stale_pending()
            while services.embeddings_embed_stale():
                pass
            by_reference = {mode: evaluate(labelled, mode) for mode in SearchMode.values}
    reset_catalog()

    results = []
    kinds = ["all", "brand_size", "code", "misspelt", "meaning"]
    for kind in kinds:
        count = sum(1 for query in labelled if kind in ("all", query.kind))
        for measure in ("hit@1", "ndcg@10"):
            for mode in SearchMode.values:
                results.append(
                    Result(
                        "search_quality", f"{measure} {mode}, {kind} ({count} queries)", by_mode[mode][kind][measure]
                    )
                )
    results.append(Result("search_quality", "meaning queries hybrid ranks worse than semantic (nDCG@10)", worse))
    hybrid = by_mode[SearchMode.HYBRID]
    for measure in ("hit@1", "ndcg@10"):
        for arm in (SearchMode.SEMANTIC, SearchMode.KEYWORD):
            results.append(
                Result(
                    "search_quality",
                    f"{measure} hybrid - {arm}, all queries",
                    hybrid["all"][measure] - by_mode[arm]["all"][measure],
                    target=">= 0.01",
                )
            )
        results.append(
            Result(
                "search_quality",
                f"{measure} hybrid - semantic, meaning queries",
                hybrid["meaning"][measure] - by_mode[SearchMode.SEMANTIC]["meaning"][measure],
                target=">= 0",
            )
        )
    if by_reference is not None:
        for mode in SearchMode.values:
            for measure in ("hit@1", "ndcg@10"):
                figure = by_reference[mode]["all"][measure]
                results.append(Result("search_quality", f"{measure} {mode}, all queries, {reference}", figure))
            for measure, target in (("hit@1", ">= 0"), ("ndcg@10", "")):
                results.append(
                    Result(
                        "search_quality",
                        f"{measure} {mode}, all queries: {backend} - {reference}",
                        by_mode[mode]["all"][measure] - by_reference[mode]["all"][measure],
                        target=target,
                    )
                )
    return report(results)
