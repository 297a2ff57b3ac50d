"""Sentence banks for the demo corpus.

Each language has four phrase lists (subject, verb, object, adverbial). A sentence is one pick
from each list, so every language yields 12**4 = 20,736 distinct sentences of roughly 7-12 words
(2-6 s of speech). The sentences of a language are shuffled once per seed and dealt into four
disjoint pools (``train``, ``dev``, ``eval``, ``babble``), so no text is shared across splits.
Short sentences (no adverbial, 5-7 words) serve slow engines and slow speakers.

>>> sentence("en", 0)
'The old captain carries a small wooden boat near the harbour this morning.'
>>> len(set(draw_sentences("de", "dev", "espeak-ng/de/m3", 5, seed=0)))
5
>>> set(draw_sentences("en", "train", "x", 50)) & set(draw_sentences("en", "eval", "x", 50))
set()
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np

POOLS: tuple[str, ...] = ("train", "dev", "eval", "babble")

# Four phrase lists per language (subject | verb | object | adverbial), 12 phrases each.
_PHRASES: dict[str, tuple[str, str, str, str]] = {
    "en": (
        (
            "The old captain | My younger sister | A tired doctor | The friendly baker | "
            "Our new neighbour | The quiet student | A young farmer | The busy teacher | "
            "Her grandfather | The clever engineer | A famous painter | The little boy"
        ),
        (
            "carries | paints | finds | repairs | describes | buys | cleans | remembers | opens | "
            "sells | borrows | watches"
        ),
        (
            "a small wooden boat | the heavy blue suitcase | an old map of the city | "
            "the broken kitchen window | a basket of fresh apples | the red bicycle | "
            "a letter from abroad | the green garden gate | a box of coloured pencils | "
            "the silver pocket watch | a warm woollen blanket | the bright yellow kite"
        ),
        (
            "near the harbour this morning | before the long winter | after dinner on Sunday | "
            "in the middle of the night | during the summer holidays | with great care | "
            "behind the railway station | at the end of the week | without saying a word | "
            "under the cloudy sky | on the way to school | late in the afternoon"
        ),
    ),
    "de": (
        (
            "Der alte Kapitän | Meine jüngere Schwester | Ein müder Arzt | Der freundliche Bäcker | "
            "Unser neuer Nachbar | Die stille Studentin | Ein junger Bauer | Die fleißige Lehrerin | "
            "Ihr Großvater | Der kluge Ingenieur | Eine berühmte Malerin | Der kleine Junge"
        ),
        (
            "trägt | malt | findet | repariert | beschreibt | kauft | putzt | öffnet | verkauft | "
            "leiht | betrachtet | sucht"
        ),
        (
            "ein kleines Holzboot | den schweren blauen Koffer | eine alte Karte der Stadt | "
            "das kaputte Küchenfenster | einen Korb mit frischen Äpfeln | das rote Fahrrad | "
            "einen Brief aus dem Ausland | das grüne Gartentor | eine Schachtel Buntstifte | "
            "die silberne Taschenuhr | eine warme Wolldecke | den hellgelben Drachen"
        ),
        (
            "heute Morgen am Hafen | vor dem langen Winter | nach dem Abendessen am Sonntag | "
            "mitten in der Nacht | während der Sommerferien | mit großer Sorgfalt | "
            "hinter dem Bahnhof | am Ende der Woche | ohne ein Wort zu sagen | "
            "unter dem bewölkten Himmel | auf dem Weg zur Schule | spät am Nachmittag"
        ),
    ),
    "fr": (
        (
            "Le vieux capitaine | Ma petite sœur | Un médecin fatigué | Le boulanger aimable | "
            "Notre nouveau voisin | L'étudiante silencieuse | Un jeune agriculteur | "
            "La maîtresse occupée | Son grand-père | L'ingénieur habile | Une peintre célèbre | "
            "Le petit garçon"
        ),
        (
            "porte | peint | trouve | répare | décrit | achète | nettoie | ouvre | vend | emprunte | "
            "regarde | cherche"
        ),
        (
            "un petit bateau en bois | la lourde valise bleue | une vieille carte de la ville | "
            "la fenêtre cassée de la cuisine | un panier de pommes fraîches | le vélo rouge | "
            "une lettre de l'étranger | le portail vert du jardin | "
            "une boîte de crayons de couleur | la montre de poche en argent | "
            "une couverture de laine chaude | le cerf-volant jaune"
        ),
        (
            "près du port ce matin | avant le long hiver | après le dîner du dimanche | "
            "au milieu de la nuit | pendant les vacances d'été | avec beaucoup de soin | "
            "derrière la gare | à la fin de la semaine | sans dire un mot | sous le ciel nuageux | "
            "sur le chemin de l'école | tard dans l'après-midi"
        ),
    ),
    "es": (
        (
            "El viejo capitán | Mi hermana menor | Un médico cansado | El panadero amable | "
            "Nuestro nuevo vecino | La estudiante callada | Un joven granjero | La maestra ocupada | "
            "Su abuelo | El ingeniero listo | Una pintora famosa | El niño pequeño"
        ),
        (
            "lleva | pinta | encuentra | repara | describe | compra | limpia | abre | vende | mira | "
            "busca | guarda"
        ),
        (
            "un pequeño barco de madera | la pesada maleta azul | un mapa antiguo de la ciudad | "
            "la ventana rota de la cocina | una cesta de manzanas frescas | la bicicleta roja | "
            "una carta del extranjero | la puerta verde del jardín | "
            "una caja de lápices de colores | el reloj de bolsillo de plata | "
            "una manta de lana caliente | la cometa amarilla"
        ),
        (
            "cerca del puerto esta mañana | antes del largo invierno | "
            "después de la cena del domingo | en medio de la noche | "
            "durante las vacaciones de verano | con mucho cuidado | detrás de la estación | "
            "al final de la semana | sin decir una palabra | bajo el cielo nublado | "
            "camino de la escuela | a última hora de la tarde"
        ),
    ),
    "it": (
        (
            "Il vecchio capitano | Mia sorella minore | Un medico stanco | Il fornaio gentile | "
            "Il nostro nuovo vicino | La studentessa silenziosa | Un giovane contadino | "
            "La maestra impegnata | Suo nonno | L'ingegnere abile | Una pittrice famosa | "
            "Il bambino piccolo"
        ),
        (
            "porta | dipinge | trova | ripara | descrive | compra | pulisce | apre | vende | "
            "guarda | cerca | prende"
        ),
        (
            "una piccola barca di legno | la pesante valigia blu | una vecchia mappa della città | "
            "la finestra rotta della cucina | un cesto di mele fresche | la bicicletta rossa | "
            "una lettera dall'estero | il cancello verde del giardino | "
            "una scatola di matite colorate | l'orologio d'argento | una calda coperta di lana | "
            "l'aquilone giallo"
        ),
        (
            "vicino al porto stamattina | prima del lungo inverno | dopo la cena di domenica | "
            "nel mezzo della notte | durante le vacanze estive | con grande cura | "
            "dietro la stazione | alla fine della settimana | senza dire una parola | "
            "sotto il cielo nuvoloso | sulla strada per la scuola | tardi nel pomeriggio"
        ),
    ),
    "nl": (
        (
            "De oude kapitein | Mijn jongere zus | Een vermoeide dokter | De vriendelijke bakker | "
            "Onze nieuwe buurman | De stille studente | Een jonge boer | De drukke lerares | "
            "Haar grootvader | De slimme ingenieur | Een beroemde schilder | Het kleine jongetje"
        ),
        (
            "draagt | schildert | vindt | repareert | beschrijft | koopt | poetst | opent | "
            "verkoopt | leent | bekijkt | zoekt"
        ),
        (
            "een klein houten bootje | de zware blauwe koffer | een oude kaart van de stad | "
            "het kapotte keukenraam | een mand met verse appels | de rode fiets | "
            "een brief uit het buitenland | het groene tuinhek | een doos kleurpotloden | "
            "het zilveren zakhorloge | een warme wollen deken | de felgele vlieger"
        ),
        (
            "vanochtend bij de haven | voor de lange winter | na het avondeten op zondag | "
            "midden in de nacht | tijdens de zomervakantie | met grote zorg | achter het station | "
            "aan het eind van de week | zonder een woord te zeggen | onder de bewolkte hemel | "
            "op weg naar school | laat in de middag"
        ),
    ),
    "pt": (
        (
            "O velho capitão | A minha irmã mais nova | Um médico cansado | O padeiro simpático | "
            "O nosso novo vizinho | A estudante calada | Um jovem agricultor | "
            "A professora ocupada | O avô dela | O engenheiro esperto | Uma pintora famosa | "
            "O menino pequeno"
        ),
        (
            "leva | pinta | encontra | conserta | descreve | compra | limpa | abre | vende | "
            "observa | procura | guarda"
        ),
        (
            "um pequeno barco de madeira | a mala azul pesada | um mapa antigo da cidade | "
            "a janela partida da cozinha | um cesto de maçãs frescas | a bicicleta vermelha | "
            "uma carta do estrangeiro | o portão verde do jardim | uma caixa de lápis de cor | "
            "o relógio de bolso de prata | um cobertor de lã quente | o papagaio de papel amarelo"
        ),
        (
            "perto do porto esta manhã | antes do longo inverno | depois do jantar de domingo | "
            "no meio da noite | durante as férias de verão | com muito cuidado | atrás da estação | "
            "no fim da semana | sem dizer uma palavra | debaixo do céu nublado | "
            "a caminho da escola | ao fim da tarde"
        ),
    ),
    "sv": (
        (
            "Den gamle kaptenen | Min yngre syster | En trött läkare | Den vänlige bagaren | "
            "Vår nya granne | Den tysta studenten | En ung bonde | Den upptagna läraren | "
            "Hennes farfar | Den kloka ingenjören | En berömd målare | Den lilla pojken"
        ),
        (
            "bär | målar | hittar | lagar | beskriver | köper | städar | öppnar | säljer | lånar | "
            "tittar på | letar efter"
        ),
        (
            "en liten träbåt | den tunga blå resväskan | en gammal karta över staden | "
            "det trasiga köksfönstret | en korg med färska äpplen | den röda cykeln | "
            "ett brev från utlandet | den gröna trädgårdsgrinden | en ask med färgpennor | "
            "det silverfärgade fickuret | en varm ullfilt | den gula draken"
        ),
        (
            "vid hamnen i morse | före den långa vintern | efter middagen på söndag | "
            "mitt i natten | under sommarlovet | med stor omsorg | bakom järnvägsstationen | "
            "i slutet av veckan | utan att säga ett ord | under den molniga himlen | "
            "på väg till skolan | sent på eftermiddagen"
        ),
    ),
}

_BANKS: dict[str, tuple[tuple[str, ...], ...]] = {
    lang: tuple(tuple(w.strip() for w in part.split("|")) for part in parts)
    for lang, parts in _PHRASES.items()
}

LANGUAGES: tuple[str, ...] = tuple(_BANKS)


def stable_hash(*parts: object) -> int:
    """A 32-bit hash of the parts' text that is the same in every process (unlike ``hash``)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8"))


def sentence_count(lang: str, short: bool = False) -> int:
    """How many distinct sentences the bank of ``lang`` makes (``short``: without adverbial)."""
    count = 1
    for part in _parts(lang, short):
        count *= len(part)
    return count


def sentence(lang: str, index: int, short: bool = False) -> str:
    """Sentence number ``index`` of ``lang`` (mixed radix over the phrase lists).

    ``short`` drops the adverbial (5-7 words), for slow or slow-speaking engines.

    >>> sentence("en", 0, short=True)
    'The old captain carries a small wooden boat.'
    """
    words = []
    rest = int(index) % sentence_count(lang, short)
    for part in _parts(lang, short):
        rest, pick = divmod(rest, len(part))
        words.append(part[pick])
    return " ".join(words) + "."


@lru_cache(maxsize=64)
def _pools(lang: str, seed: int, short: bool) -> dict[str, np.ndarray]:
    """Disjoint pools of sentence indices for one language, shuffled once per seed."""
    rng = np.random.default_rng([seed, stable_hash("pools", lang, short)])
    order = rng.permutation(sentence_count(lang, short))
    return {name: order[i :: len(POOLS)] for i, name in enumerate(POOLS)}


@lru_cache(maxsize=4096)
def _stream(lang: str, pool: str, key: str, seed: int, short: bool) -> np.ndarray:
    """The pool of ``lang`` in the order used by the stream ``key``."""
    if pool not in POOLS:
        raise ValueError(f"unknown sentence pool {pool!r}; expected one of {POOLS}")
    rng = np.random.default_rng([seed, stable_hash("draw", lang, pool, key, short)])
    return rng.permutation(_pools(lang, seed, short)[pool])


def pool_size(lang: str, pool: str, short: bool = False) -> int:
    """How many sentences one pool of ``lang`` holds."""
    return len(_pools(lang, 0, short)[pool])


def draw_sentences(lang: str, pool: str, key: str, n: int, seed: int = 0, short: bool = False) -> list[str]:
    """``n`` distinct sentences of ``lang`` from ``pool`` for the stream named ``key``.

    The draw depends only on (seed, lang, pool, key, short), and a longer draw starts with a
    shorter one, so a small corpus uses the first texts of a big one.
    """
    order = _stream(lang, pool, key, seed, short)
    if n > len(order):
        raise ValueError(f"{lang}/{pool}: asked for {n} sentences, the pool holds {len(order)}")
    return [sentence(lang, int(i), short) for i in order[:n]]


def spare_sentences(
    lang: str, pool: str, key: str, item: int, k: int, seed: int = 0, short: bool = False
) -> list[str]:
    """``k`` replacement sentences for item ``item`` of a stream, taken from the end of its order.

    They differ from every primary sentence of the stream as long as ``n + k * (item + 1)`` stays
    within the pool.
    """
    order = _stream(lang, pool, key, seed, short)
    picks = [order[-1 - (item * k + j) % len(order)] for j in range(k)]
    return [sentence(lang, int(i), short) for i in picks]


def _parts(lang: str, short: bool) -> tuple[tuple[str, ...], ...]:
    bank = _bank(lang)
    return bank[:3] if short else bank


def _bank(lang: str) -> tuple[tuple[str, ...], ...]:
    try:
        return _BANKS[lang]
    except KeyError:
        raise ValueError(f"no sentence bank for language {lang!r}; available: {LANGUAGES}") from None
