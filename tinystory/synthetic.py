"""A built-in corpus of simple stories, generated from our own templates and word lists.

Each story has named characters, an action, a little dialogue, a problem that gets solved and a moral ending ("The
moral of the story is ..."), with pronouns and names kept consistent, so a tiny model has real structure to learn
and the whole program runs with no download. It is not a substitute for real data: its vocabulary and plots are a
few hundred words and six story shapes, so a model trained on it only learns to recite templates; use TinyStories
for anything you want to judge.

Story i depends only on (seed, i): `synthetic_stories(100)` is a prefix of `synthetic_stories(1000)`.
"""
import random

GIRLS = ["Lily", "Mia", "Sue", "Anna", "Lucy", "Emma", "Zoe", "Kim", "Sara", "Amy", "Ella", "Daisy", "Rose", "Jane"]
BOYS = ["Tom", "Ben", "Max", "Sam", "Leo", "Tim", "Jack", "Finn", "Jake", "Bob", "Joe", "Timmy", "Bill", "Dan"]
ANIMALS = ["cat", "dog", "bunny", "bird", "bear", "fox", "frog", "duck", "mouse", "puppy", "lion", "owl"]
TRAITS = ["little", "happy", "kind", "curious", "small", "brave", "funny", "shy", "friendly", "silly"]
PLACES = ["park", "garden", "forest", "beach", "pond", "farm", "yard", "hill", "meadow", "playground"]
TOYS = ["ball", "kite", "toy car", "toy boat", "doll", "teddy bear", "drum", "book", "hat", "box of blocks",
        "balloon", "truck"]
COLORS = ["red", "blue", "yellow", "green", "shiny", "big", "soft", "pink", "new", "colorful"]
LIKES = ["play outside", "run fast", "sing songs", "jump high", "draw pictures", "dance", "climb trees",
         "look at the sky", "build towers", "splash in puddles"]
WEATHER = ["The sun was warm and bright.", "The sky was blue and the birds were singing.",
           "There was a soft wind in the trees.", "It was a sunny day.", "The flowers were big and pretty."]

PRONOUNS = {"girl": ("she", "her", "her"), "boy": ("he", "him", "his")}

def _character(rng: random.Random, avoid: str = "") -> dict:
  gender = rng.choice(["girl", "boy"])
  name = rng.choice([n for n in (GIRLS if gender == "girl" else BOYS) if n != avoid])
  kind = gender if rng.random() < 0.6 else rng.choice(ANIMALS)
  he, him, his = PRONOUNS[gender]
  who = name if kind == gender else f"{name} the {kind}"  # "Tom the dog", but just "Tom" for a boy
  return {"name": name, "kind": kind, "who": who, "he": he, "him": him, "his": his, "He": he.capitalize(), "His": his.capitalize()}

def _words(rng: random.Random) -> dict:
  """The slots every template may use: hero fields as-is, friend fields prefixed with `f` (fname, fhe, ...)."""
  hero = _character(rng)
  friend = {"f" + k: v for k, v in _character(rng, avoid=hero["name"]).items()}
  return {**hero, **friend, "trait": rng.choice(TRAITS), "place": rng.choice(PLACES), "toy": rng.choice(TOYS),
          "color": rng.choice(COLORS), "like": rng.choice(LIKES), "parent": rng.choice(["mom", "dad"]),
          "weather": rng.choice(WEATHER)}

OPENINGS = [
  "Once upon a time, there was a {trait} {kind} named {name}. {He} loved to {like}.",
  "One day, a {trait} {kind} named {name} went to the {place}. {weather}",
  "{name} was a {trait} {kind} who loved to {like}. Every day, {he} went to the {place}.",
  "Once upon a time, in a small house near the {place}, there lived a {kind} named {name}.",
]

# Each shape is (middle sentences, moral endings): the problem and its fix, then the lesson that follows from them.
SHAPES = {
  "share": ([
    "{name} had a {color} {toy}. {He} liked it very much.",
    "One day, {fwho} came to play. {fHe} saw the {toy} and said, \"Can I play with your {toy}?\"",
    "{name} held the {toy} close and said, \"No, it is mine!\" {fname} was sad and walked away.",
    "{name} played alone, but it was not fun. {He} felt bad in {his} tummy.",
    "{He} ran to {fname} and said, \"I am sorry. Let's play with the {toy} together.\"",
    "{fname} smiled. They played with the {toy} all day and they were very happy.",
  ], ["sharing makes everyone happy", "it is good to share with your friends", "friends are more fun than toys"]),
  "help": ([
    "{name} and {fname} were playing at the {place}. They ran and laughed in the sun.",
    "{fname} had a {color} {toy}, but it got stuck high up in a tree. {fname} began to cry.",
    "\"Don't cry, {fname},\" said {name}. \"I will help you.\"",
    "{name} thought and thought. Then {he} found a long stick and pushed the {toy} until it fell down.",
    "{fname} hugged {name} and said, \"Thank you! You are a good friend.\"",
    "{name} felt warm and proud. Helping {fname} made {him} happy too.",
  ], ["helping others is kind", "a good friend is always ready to help", "when we help others, we feel happy too"]),
  "brave": ([
    "At the {place}, there was a big slide. {name} wanted to go down, but {he} was scared.",
    "\"It is too high,\" {name} said to {his} {parent}. \"I am afraid.\"",
    "{His} {parent} smiled and said, \"You can do it. I will be right here.\"",
    "{name} took a deep breath and climbed up. {He} sat at the top and let go.",
    "Whoosh! {name} went down fast and landed with a laugh. \"Again!\" {he} said.",
    "{name} went down the slide many times that day. {He} was not scared anymore.",
  ], ["being brave can help you find new fun things", "you should try even when you are scared",
      "it is okay to be scared, but it is good to be brave"]),
  "honest": ([
    "{name} was playing with {his} {toy} in the house. {He} threw it up high.",
    "Crash! The {toy} hit {his} {parent}'s {color} vase and it broke into pieces.",
    "{name} was scared. {He} hid the pieces under the bed and did not say a word.",
    "Later, {his} {parent} looked for the vase and asked, \"Do you know where my vase is?\"",
    "{name} felt bad. {He} said, \"I am sorry. I broke it with my {toy}.\"",
    "{His} {parent} gave {him} a hug and said, \"Thank you for telling me the truth. We can fix it together.\"",
  ], ["it is always better to tell the truth", "being honest is important", "you should never hide your mistakes"]),
  "listen": ([
    "One day, {name} wanted to go to the {place} to {like}.",
    "{His} {parent} said, \"You can go, but stay away from the deep water.\"",
    "At the {place}, {name} saw a {color} {toy} near the water. {He} forgot what {his} {parent} said and went close.",
    "Splash! {name} slipped and fell in. The water was cold and {he} was wet and scared.",
    "{fwho} saw {him} and helped {him} out. {name} ran home to {his} {parent}.",
    "\"I am sorry I did not listen,\" {name} said. {His} {parent} dried {him} off and hugged {him}.",
  ], ["you should listen to your mom and dad", "it is important to be careful", "rules are there to keep us safe"]),
  "patient": ([
    "{name} and {his} {parent} planted a small seed in the {place}.",
    "Every day, {name} looked at the ground. \"When will it grow?\" {he} asked.",
    "\"You have to be patient,\" said {his} {parent}. \"Give it water and wait.\"",
    "So {name} gave the seed water every day. {He} waited and waited.",
    "One morning, {name} saw a little green plant. Soon it grew into a big {color} flower.",
    "{name} showed the flower to {fwho}. They both thought it was the prettiest flower in the world.",
  ], ["good things come to those who wait", "being patient is important", "if you take care of something, it grows"]),
}

ENDINGS = ["From that day on, {name} always remembered what {he} learned.", "And they lived happily ever after.",
           "{name} went to bed with a big smile."]
FRIEND_ENDINGS = ["{name} and {fname} were best friends forever.", "{name} and {fname} played together every day."]

def synthetic_story(seed: int, i: int) -> str:
  rng = random.Random(f"tinystory-synthetic-{seed}-{i}")  # a str seed hashes stably across processes
  w = _words(rng)
  middle, morals = SHAPES[rng.choice(sorted(SHAPES))]
  endings = ENDINGS + FRIEND_ENDINGS if any("{f" in line for line in middle) else ENDINGS  # only a friend we met
  lines = [rng.choice(OPENINGS), *middle, rng.choice(endings), f"The moral of the story is that {rng.choice(morals)}."]
  return "\n".join(line.format_map(w) for line in lines)

def synthetic_stories(n: int, seed: int = 0) -> list[str]:
  """`n` stories, a deterministic function of (n, seed)."""
  return [synthetic_story(seed, i) for i in range(n)]
